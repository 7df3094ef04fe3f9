"""Weights files: what a file is (by its tensors, never its name), loading it safely, fetching published files.

- :mod:`.reading`: names and shapes from a file's header; safe tensor loading; truncated/corrupt/unsafe files
  raise :class:`~mmaudio.errors.WrongCheckpointError`.
- :mod:`.identify`: which MMAudio component a set of shapes is (network variant, VAE/vocoder mode, ...).
- :mod:`.files`: the same for files and folders, and the component state dict a loader needs.
- :mod:`.known_files` and :mod:`.download`: the published files, fetched from the Hub only on request.
- :mod:`.precision` and :mod:`.materialize`: storage/compute dtypes, casting, meta-device construction.
"""

from .download import (
    ChecksumMismatchError,
    MissingWeightsError,
    download_known_file,
    find_known_file,
    hub_offline,
    missing_file_message,
    missing_weights_error,
    verify_file,
)
from .files import (
    FoundFile,
    identify_file,
    list_files_of_kind,
    load_component,
    load_state_dict_file,
    require_kind,
    scan_folders,
)
from .identify import (
    KINDS,
    CheckpointIdentity,
    component_of_kind,
    describe_checkpoint,
    identify_checkpoint,
    identify_components,
)
from .known_files import KNOWN_FILES, KnownFile, files_for_variant, known_file, known_files
from .materialize import instantiate_on_meta, load_into
from .precision import (
    FP32_KEYS,
    PRECISIONS,
    STORAGE_DTYPES,
    PrecisionPlan,
    cast_state_dict,
    compute_dtype_for,
    dtype_name,
    layer_weight_keys,
    parse_dtype,
    plan_precision,
    preferred_half_dtype,
    supports_bf16,
)
from .reading import FileHeader, TensorInfo, clear_header_cache, load_tensors, read_header, read_shapes

__all__ = [
    "FP32_KEYS",
    "KINDS",
    "KNOWN_FILES",
    "PRECISIONS",
    "STORAGE_DTYPES",
    "CheckpointIdentity",
    "ChecksumMismatchError",
    "FileHeader",
    "FoundFile",
    "KnownFile",
    "MissingWeightsError",
    "PrecisionPlan",
    "TensorInfo",
    "cast_state_dict",
    "clear_header_cache",
    "component_of_kind",
    "compute_dtype_for",
    "describe_checkpoint",
    "download_known_file",
    "dtype_name",
    "files_for_variant",
    "find_known_file",
    "hub_offline",
    "identify_checkpoint",
    "identify_components",
    "identify_file",
    "instantiate_on_meta",
    "known_file",
    "known_files",
    "layer_weight_keys",
    "list_files_of_kind",
    "load_component",
    "load_into",
    "load_state_dict_file",
    "load_tensors",
    "missing_file_message",
    "missing_weights_error",
    "parse_dtype",
    "plan_precision",
    "preferred_half_dtype",
    "read_header",
    "read_shapes",
    "require_kind",
    "scan_folders",
    "supports_bf16",
    "verify_file",
]
