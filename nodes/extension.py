"""The V3 extension: the node list ComfyUI registers, and the ``comfy_entrypoint`` it calls.

Node ids and type names are part of saved workflows: never rename them (deprecate and replace instead).
The mux node lives in ``nodes/mux.py`` (``MUX_NODES``); if that module is absent or broken the other nodes still
load and the problem is logged once.
"""

from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension, io

from .download import MMAudioSyncDownloadWeights
from .generation import (
    MMAudioSyncCompileNetwork,
    MMAudioSyncDecode,
    MMAudioSyncEncodeAudio,
    MMAudioSyncEncodeConditions,
    MMAudioSyncRegenerateRange,
    MMAudioSyncSampler,
)
from .loaders import MMAudioSyncDecoderLoader, MMAudioSyncFeatureModelsLoader, MMAudioSyncNetworkLoader
from .model_folder import register_model_folder

log = logging.getLogger(__name__)

CORE_NODES: list[type[io.ComfyNode]] = [
    MMAudioSyncNetworkLoader,
    MMAudioSyncFeatureModelsLoader,
    MMAudioSyncDecoderLoader,
    MMAudioSyncEncodeConditions,
    MMAudioSyncSampler,
    MMAudioSyncCompileNetwork,
    MMAudioSyncDecode,
    MMAudioSyncEncodeAudio,
    MMAudioSyncRegenerateRange,
    MMAudioSyncDownloadWeights,
]


def _mux_nodes() -> list[type[io.ComfyNode]]:
    try:
        from .mux import MUX_NODES
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith("nodes.mux"):
            return []
        log.exception("MMAudio Sync: the mux node could not be loaded")
        return []
    except Exception:  # a broken optional module must not take the other nodes down
        log.exception("MMAudio Sync: the mux node could not be loaded")
        return []
    return list(MUX_NODES)


def node_list() -> list[type[io.ComfyNode]]:
    return CORE_NODES + _mux_nodes()


class MMAudioSyncExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_list()


async def comfy_entrypoint() -> MMAudioSyncExtension:
    register_model_folder()
    return MMAudioSyncExtension()
