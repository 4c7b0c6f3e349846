"""MedSora: medical video generation with Mamba diffusion and optical-flow representation alignment."""
__version__ = "0.1.0"
