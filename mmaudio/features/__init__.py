"""Conditioning features: frame choice by timestamp, CLIP image/text features, Synchformer sync features."""

from .clip import ClipEncoder, build_clip, clip_config, clip_weights, get_tokenizer, load_clip
from .extractor import FeatureExtractor
from .frames import (
    CLIP_FPS,
    CLIP_SIZE,
    SYNC_FPS,
    SYNC_SIZE,
    FramePlan,
    PreparedFrames,
    plan_frames,
    prepare_frames,
    select_and_prepare,
)
from .synchformer import SynchformerVisual, encode_sync_frames, load_synchformer, synchformer_weights

__all__ = [
    "CLIP_FPS",
    "CLIP_SIZE",
    "SYNC_FPS",
    "SYNC_SIZE",
    "ClipEncoder",
    "FeatureExtractor",
    "FramePlan",
    "PreparedFrames",
    "SynchformerVisual",
    "build_clip",
    "clip_config",
    "clip_weights",
    "encode_sync_frames",
    "get_tokenizer",
    "load_clip",
    "load_synchformer",
    "plan_frames",
    "prepare_frames",
    "select_and_prepare",
    "synchformer_weights",
]
