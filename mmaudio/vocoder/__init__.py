"""BigVGAN vocoders: v1 16 kHz (80 mel bands, 256x) and v2 44.1 kHz (128 bands, 512x), plain PyTorch."""

from .bigvgan import BigVGAN
from .config import BigVGANConfig
from .loader import (
    fold_weight_norm,
    generator_state_dict,
    infer_vocoder_config,
    load_vocoder,
    vocoder_checkpoint_template,
)

__all__ = ["BigVGAN", "BigVGANConfig", "fold_weight_norm", "generator_state_dict", "infer_vocoder_config",
           "load_vocoder", "vocoder_checkpoint_template"]
