"""Node schemas and registration, through the ComfyUI stand-in (tests/comfy_stub).

What a user sees in the node menu and what saved workflows depend on: stable prefixed ids and type names that
never collide with kijai's MMAudio pack, a category, descriptions, a tooltip on every input, the reference's
defaults, and a V3 entry point without NODE_CLASS_MAPPINGS.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types

import pytest

from .pack_loader import PACK_NAME, stubbed_pack

EXPECTED_NODES = {
    "MMAudioSyncNetworkLoader": ([], ["MMAUDIO_SYNC_NETWORK"]),
    "MMAudioSyncFeatureModelsLoader": ([], ["MMAUDIO_SYNC_FEATURE_MODELS"]),
    "MMAudioSyncDecoderLoader": ([], ["MMAUDIO_SYNC_DECODER"]),
    "MMAudioSyncEncodeConditions": (["MMAUDIO_SYNC_FEATURE_MODELS", "MMAUDIO_SYNC_NETWORK"],
                                    ["MMAUDIO_SYNC_CONDITIONS", "FLOAT"]),
    "MMAudioSyncSampler": (["MMAUDIO_SYNC_NETWORK", "MMAUDIO_SYNC_CONDITIONS", "MMAUDIO_SYNC_LATENT"],
                           ["MMAUDIO_SYNC_LATENT"]),
    "MMAudioSyncEncodeAudio": (["MMAUDIO_SYNC_DECODER"], ["MMAUDIO_SYNC_LATENT", "FLOAT"]),
    "MMAudioSyncRegenerateRange": (["MMAUDIO_SYNC_LATENT"], ["MMAUDIO_SYNC_LATENT"]),
    "MMAudioSyncDecode": (["MMAUDIO_SYNC_DECODER", "MMAUDIO_SYNC_LATENT"], ["AUDIO"]),
    "MMAudioSyncCompileNetwork": (["MMAUDIO_SYNC_NETWORK"], ["MMAUDIO_SYNC_NETWORK"]),
}
KIJAI_IDS = {"MMAudioModelLoader", "MMAudioVoCoderLoader", "MMAudioFeatureUtilsLoader", "MMAudioSampler"}
KIJAI_TYPES = {"MMAUDIO_MODEL", "VOCODER_MODEL", "MMAUDIO_FEATUREUTILS"}
CUSTOM_TYPES = {"MMAUDIO_SYNC_NETWORK", "MMAUDIO_SYNC_FEATURE_MODELS", "MMAUDIO_SYNC_DECODER",
                "MMAUDIO_SYNC_CONDITIONS", "MMAUDIO_SYNC_LATENT"}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    with stubbed_pack(tmp_path_factory.mktemp("models")) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def schemas(pack):
    extension = asyncio.run(pack.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    return {cls.GET_SCHEMA().node_id: (cls, cls.GET_SCHEMA()) for cls in nodes}


def test_entry_point_is_v3_only(pack):
    assert callable(pack.comfy_entrypoint)
    assert asyncio.iscoroutinefunction(pack.comfy_entrypoint)
    for legacy in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"):
        assert not hasattr(pack, legacy), f"{legacy} next to comfy_entrypoint would hide the V3 extension"
    extension = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(extension, sys.modules["comfy_api.latest"].ComfyExtension)


def test_every_node_is_listed_with_its_types(schemas):
    assert set(EXPECTED_NODES) <= set(schemas)
    for node_id, (inputs, outputs) in EXPECTED_NODES.items():
        _, schema = schemas[node_id]
        assert [o.io_type for o in schema.outputs] == outputs
        linked = [i.io_type for i in schema.inputs if i.io_type in CUSTOM_TYPES]
        assert linked == inputs, node_id


def test_ids_and_types_are_prefixed_and_never_collide_with_kijai(schemas):
    for node_id, (_, schema) in schemas.items():
        assert node_id.startswith("MMAudioSync")
        assert node_id not in KIJAI_IDS
        for socket in [*schema.inputs, *schema.outputs]:
            assert socket.io_type not in KIJAI_TYPES
            if socket.io_type.startswith("MMAUDIO"):
                assert socket.io_type.startswith("MMAUDIO_SYNC_"), socket.io_type


def test_category_description_and_tooltips_everywhere(schemas):
    for node_id, (_, schema) in schemas.items():
        assert schema.category == "audio/MMAudio", node_id
        assert schema.display_name and schema.description and len(schema.description) > 40, node_id
        for socket in schema.inputs:
            assert socket.tooltip and len(socket.tooltip) > 10, f"{node_id}.{socket.id} has no tooltip"
        for socket in schema.outputs:
            assert socket.tooltip, f"{node_id} output {socket.display_name} has no tooltip"


def _input(schemas, node_id: str, name: str):
    return next(i for i in schemas[node_id][1].inputs if i.id == name)


def test_defaults_are_the_reference_settings(schemas):
    assert _input(schemas, "MMAudioSyncSampler", "steps").default == 25
    assert _input(schemas, "MMAudioSyncSampler", "steps").min == 1
    assert _input(schemas, "MMAudioSyncSampler", "cfg").default == 4.5
    assert _input(schemas, "MMAudioSyncSampler", "samples").default == 1
    seed = _input(schemas, "MMAudioSyncSampler", "seed")
    assert seed.control_after_generate and seed.max == 2**64 - 1
    duration = _input(schemas, "MMAudioSyncEncodeConditions", "duration")
    assert duration.default == 0.0 and "clip length" in duration.tooltip
    assert _input(schemas, "MMAudioSyncEncodeConditions", "mask_away_clip").default is False
    for optional in ("images", "fps", "video", "network"):
        assert _input(schemas, "MMAudioSyncEncodeConditions", optional).optional
    assert "line" in _input(schemas, "MMAudioSyncEncodeConditions", "prompt").tooltip


def test_precision_options(schemas):
    for node_id in ("MMAudioSyncNetworkLoader", "MMAudioSyncFeatureModelsLoader", "MMAudioSyncDecoderLoader"):
        precision = _input(schemas, node_id, "precision")
        assert precision.options == ["auto", "fp32", "fp16", "bf16", "fp8_e4m3fn"]
        assert precision.default == "auto"


def test_execute_signatures_accept_every_schema_input(schemas):
    import inspect

    for node_id, (cls, schema) in schemas.items():
        params = inspect.signature(cls.execute).parameters
        for socket in schema.inputs:
            assert socket.id in params, f"{node_id}.execute lacks {socket.id}"
            if socket.optional:  # ComfyUI leaves an unconnected optional input out of the call
                assert params[socket.id].default is not inspect.Parameter.empty, f"{node_id}.{socket.id}"


def test_mux_nodes_are_included_when_present(pack, monkeypatch):
    io = sys.modules["comfy_api.latest"].io

    class FakeMux(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="MMAudioSyncMuxTest", category="audio/MMAudio")

    fake = types.ModuleType(f"{PACK_NAME}.nodes.mux")
    fake.MUX_NODES = [FakeMux]
    monkeypatch.setitem(sys.modules, f"{PACK_NAME}.nodes.mux", fake)
    extension_module = sys.modules[f"{PACK_NAME}.nodes.extension"]
    assert FakeMux in extension_module.node_list()


def test_broken_mux_module_does_not_hide_the_other_nodes(pack, monkeypatch, caplog):
    broken = types.ModuleType(f"{PACK_NAME}.nodes.mux")  # no MUX_NODES: an ImportError on "from .mux import"
    monkeypatch.setitem(sys.modules, f"{PACK_NAME}.nodes.mux", broken)
    extension_module = sys.modules[f"{PACK_NAME}.nodes.extension"]
    with caplog.at_level(logging.ERROR):
        nodes = extension_module.node_list()
    assert len(nodes) == len(extension_module.CORE_NODES)
    assert "mux" in caplog.text


def test_requires_comfyui_matches_the_entry_point():
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    spec = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["comfy"]["requires-comfyui"]
    source = (root / "__init__.py").read_text()
    minimum = source.split('MINIMUM_COMFYUI = "')[1].split('"')[0]
    assert spec == f">={minimum}"
