"""MMAudio's mel VAE: EDM2-style magnitude-preserving 1-D autoencoder (16 kHz and 44.1 kHz)."""

from .distribution import LatentDistribution
from .loader import infer_vae_config, load_vae, vae_state_dict_template
from .model import VAE, VAEConfig

__all__ = ["VAE", "LatentDistribution", "VAEConfig", "infer_vae_config", "load_vae", "vae_state_dict_template"]
