"""The MMAudio flow network: configuration, variants, sequence lengths, checkpoint detection."""

from ..modes import MODES
from .conditions import NetworkConditions
from .config import CHECKPOINT_FILES, VARIANTS, NetworkConfig
from .detect import build_network_from_state_dict, config_from_state_dict
from .network import MMAudioNetwork
from .sequence_config import MIN_DURATION_S, SequenceLengths

__all__ = [
    "CHECKPOINT_FILES",
    "MIN_DURATION_S",
    "MODES",
    "VARIANTS",
    "MMAudioNetwork",
    "NetworkConditions",
    "NetworkConfig",
    "SequenceLengths",
    "build_network_from_state_dict",
    "config_from_state_dict",
]
