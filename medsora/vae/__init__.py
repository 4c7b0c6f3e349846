"""The 3D causal video VAE (CogVideoX), its frequency-compensation modules and losses."""
