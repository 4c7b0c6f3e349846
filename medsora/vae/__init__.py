"""The 3D causal video VAE (CogVideoX), its frequency-compensation modules and losses.

    VideoVAE                 autoencoder.py   diffusers' AutoencoderKLCogVideoX behind the clip/latent contract
    Compensation             compensation.py  residual zero-init 2D (encoder) / causal 3D (decoder) modules, hooked in
    FocalFrequencyLoss       ffl.py           Jiang et al. 2021
    load_lpips               perceptual.py    LPIPS with a local ImageNet trunk
    train_compensation, train_tiny_vae        train.py
    train_adversarial, PairDiscriminator      adversarial.py   hinge GAN loss with adaptive weight (sharper decoders)
    evaluate_reconstruction                   evaluate.py
"""
from medsora.vae.autoencoder import COGVIDEOX_2B_CONFIG, TINY_CONFIG, VideoVAE
from medsora.vae.compensation import Compensation
from medsora.vae.ffl import FocalFrequencyLoss

__all__ = ["VideoVAE", "Compensation", "FocalFrequencyLoss", "COGVIDEOX_2B_CONFIG", "TINY_CONFIG"]
