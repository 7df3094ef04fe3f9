"""The one generation engine: visual source + prompts -> conditions -> latents -> audio.

The ComfyUI nodes, the command line and the benchmark are thin drivers of these functions; they differ only in
the :class:`Runtime` they pass (how a model reaches its device, where progress goes, how a run is cancelled).
"""

from .audio import encode_audio_latents
from .chain import GenerationRequest, GenerationResult, check_request, generate
from .conditions import (
    MAX_DURATION_S,
    ClipSummary,
    EncodedConditions,
    FeatureModels,
    VisualSource,
    encode_conditions,
    requested_seconds,
)
from .decoding import check_decoder, decode_audio
from .latents import AudioLatents, RegenerateRange
from .loading import ComponentFiles, LoadedModels, default_weights_folder, load_models, pick_device
from .prompts import PromptPlan, PromptTrack, parse_prompts
from .runtime import DirectRuntime, Placed, Runtime
from .sampling import SamplingSettings, check_pairing, sample_latents
from .windows import WindowPlan, WindowSettings, blend_weights, plan_windows

__all__ = [
    "MAX_DURATION_S",
    "AudioLatents",
    "ClipSummary",
    "ComponentFiles",
    "DirectRuntime",
    "EncodedConditions",
    "FeatureModels",
    "GenerationRequest",
    "GenerationResult",
    "LoadedModels",
    "Placed",
    "PromptPlan",
    "PromptTrack",
    "RegenerateRange",
    "Runtime",
    "SamplingSettings",
    "VisualSource",
    "WindowPlan",
    "WindowSettings",
    "blend_weights",
    "check_decoder",
    "check_pairing",
    "check_request",
    "decode_audio",
    "default_weights_folder",
    "encode_audio_latents",
    "encode_conditions",
    "generate",
    "load_models",
    "parse_prompts",
    "pick_device",
    "plan_windows",
    "requested_seconds",
    "sample_latents",
]
