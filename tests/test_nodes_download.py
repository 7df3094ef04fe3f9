"""The download node, through the ComfyUI stand-in and a fake Hugging Face Hub on 127.0.0.1 (no real network).

The catalogue is replaced by small files (the tiny random-weight models of ``tests/comfy_stub/tiny_weights.py``,
with their real SHA-256), so a fetch is real end to end: huggingface_hub downloads from the fake Hub, the library
checks the bytes, the node reports, and the loaders then list the files by their contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from mmaudio.weights import KnownFile

from .comfy_stub import tiny_weights
from .pack_loader import PACK_NAME, stubbed_pack
from .test_weights_download import FakeHub

NODE_ID = "MMAudioSyncDownloadWeights"
REPO = "someone/weights"
CONFIG_FIELDS = {"num_mels": 80, "sampling_rate": 16000}


def mod(name: str) -> ModuleType:
    return sys.modules[name]


def pack_mod(name: str) -> ModuleType:
    return sys.modules[f"{PACK_NAME}.{name}"]


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def wait_until_empty(folder: Path, expected: list[str], timeout_s: float = 15.0) -> list[str]:
    """What is left in ``folder``, once it is ``expected`` or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while files_under(folder) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return files_under(folder)


# ---- fixtures --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Bytes of real (tiny, random-weight) model files, one per component; Synchformer has one fixed full size
    architecture (~245 MB), so it is stood in for by random bytes (never loaded here)."""
    folder = tmp_path_factory.mktemp("payloads")
    tiny_weights.write_network(folder / "network.safetensors", clip_dim=tiny_weights.TINY_CLIP_CONFIG["embed_dim"],
                               text_dim=tiny_weights.TINY_CLIP_CONFIG["text_cfg"]["width"])
    tiny_weights.write_vae(folder / "vae.safetensors")
    tiny_weights.write_vocoder(folder / "vocoder.safetensors")
    tiny_weights.write_clip(folder / "clip.safetensors", tiny_weights.TINY_CLIP_CONFIG)
    out = {kind: (folder / f"{kind}.safetensors").read_bytes() for kind in ("network", "vae", "vocoder", "clip")}
    out["synchformer"] = os.urandom(120_000)
    out["config"] = json.dumps({**CONFIG_FIELDS, "hop_size": 256}).encode()
    return out


def entry(kind: str, local_path: str, data: bytes, **changes: object) -> KnownFile:
    fields: dict[str, object] = {
        "id": local_path, "repo_id": REPO, "filename": f"files/{local_path.rsplit('/', 1)[-1]}",
        "local_path": local_path, "kind": kind, "variant": "small_16k", "mode": "16k", "storage": "fp16",
        "source": "kijai", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "license": "test licence",
    }
    fields.update(changes)
    return KnownFile(**fields)  # type: ignore[arg-type]


def tiny_catalogue(payloads: dict[str, bytes]) -> tuple[dict[str, KnownFile], dict[str, KnownFile]]:
    """(kind -> file, as files_for_variant returns it; companion id -> file)."""
    config = entry("config", "vendor/tiny_vocoder/config.json", payloads["config"], size=None, sha256=None,
                   json_fields=CONFIG_FIELDS, source="vendor", storage="fp32")
    chosen = {
        "network": entry("network", "tiny_network_16k_fp16.safetensors", payloads["network"]),
        "vae": entry("vae", "tiny_vae_16k_fp16.safetensors", payloads["vae"]),
        "vocoder": entry("vocoder", "vendor/tiny_vocoder/tiny_vocoder.safetensors", payloads["vocoder"],
                         source="vendor", storage="fp32", companions=(config.id,)),
        "clip": entry("clip", "tiny_clip_fp16.safetensors", payloads["clip"]),
        "synchformer": entry("synchformer", "tiny_synchformer_fp16.safetensors", payloads["synchformer"]),
    }
    return chosen, {config.id: config}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payloads: dict[str, bytes]) -> Iterator[SimpleNamespace]:
    """The pack on the ComfyUI stand-in, a fake Hub serving the tiny catalogue, progress recorded."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # Downloads run in child processes that read HF_ENDPOINT: without this, huggingface_hub's telemetry would ask
    # the fake Hub for its agent registry.
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    with stubbed_pack(tmp_path / "models") as pack:
        download = pack_mod("nodes.download")
        chosen, companions = tiny_catalogue(payloads)
        requested: list[tuple[str, str]] = []

        def files_for_variant(variant: str, *, prefer: str = "fp16") -> dict[str, KnownFile]:
            requested.append((variant, prefer))
            return dict(chosen)

        monkeypatch.setattr(download, "files_for_variant", files_for_variant)
        monkeypatch.setattr(download, "known_file", lambda file_id: companions[file_id])
        for kind, known in chosen.items():
            hub.add(known.repo_id, known.filename, payloads[kind])
        for known in companions.values():
            hub.add(known.repo_id, known.filename, payloads["config"])
        progress: list[tuple[int, int]] = []
        utils, mm = mod("comfy.utils"), mod("comfy.model_management")
        utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: progress.append((value, total)))
        try:
            yield SimpleNamespace(pack=pack, download=download, hub=hub, chosen=chosen, companions=companions,
                                  requested=requested, progress=progress, mm=mm, utils=utils,
                                  folder=tmp_path / "models" / "mmaudio", tmp=tmp_path)
        finally:
            utils.set_progress_bar_global_hook(None)
            mm.interrupt_current_processing(False)
            hub.close()


def run(env: SimpleNamespace, **inputs: object):
    values = {"variant": "small_16k", "layout": "Kijai fp16 safetensors", "network": True, "decoder": True,
              "feature_models": True, **inputs}
    node = env.download.MMAudioSyncDownloadWeights.PREPARE_CLASS_CLONE({})
    return node.execute(**values)


def gets(hub: FakeHub) -> list[str]:
    return sorted(r.split()[1].rsplit("/", 1)[-1] for r in hub.requests if r.startswith("GET "))


# ---- schema ----------------------------------------------------------------------------------------------------
def test_schema_is_a_registered_output_node_and_touches_no_network(env: SimpleNamespace) -> None:
    nodes = pack_mod("nodes.extension").node_list()
    node = next(n for n in nodes if n.GET_SCHEMA().node_id == NODE_ID)
    schema = node.GET_SCHEMA()
    assert schema.is_output_node and schema.category == "audio/MMAudio" and len(schema.description) > 40
    inputs = {i.id: i for i in schema.inputs}
    assert list(inputs) == ["variant", "layout", "network", "decoder", "feature_models"]
    assert inputs["variant"].options == ["small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2"]
    assert inputs["variant"].default == "large_44k_v2"
    assert inputs["layout"].options == ["original .pth", "Kijai fp16 safetensors", "Kijai fp32 safetensors"]
    assert inputs["layout"].default in inputs["layout"].options
    assert all(inputs[name].default is True for name in ("network", "decoder", "feature_models"))
    assert all(i.tooltip and len(i.tooltip) > 10 for i in schema.inputs)
    assert [o.io_type for o in schema.outputs] == ["STRING"] and schema.outputs[0].tooltip
    node.fingerprint_inputs(variant="small_16k", layout="original .pth", network=True, decoder=True,
                            feature_models=True)
    assert env.hub.requests == [] and not env.folder.exists()


def test_loader_tooltips_point_to_the_download_node(env: SimpleNamespace) -> None:
    loaders = pack_mod("nodes.loaders")
    for cls in (loaders.MMAudioSyncNetworkLoader, loaders.MMAudioSyncFeatureModelsLoader,
                loaders.MMAudioSyncDecoderLoader):
        schema = cls.GET_SCHEMA()
        for combo in schema.inputs:
            if combo.id != "precision":
                assert combo.options == []  # empty folder: nothing fake in the list
                assert "MMAudio Download Weights" in combo.tooltip, combo.id


# ---- fetching --------------------------------------------------------------------------------------------------
def test_fetches_every_file_with_a_byte_progress_bar_and_loaders_list_them(env: SimpleNamespace,
                                                                           payloads: dict[str, bytes]) -> None:
    output = run(env)
    text = output.args[0]
    assert output.ui == {"text": (text,)}  # this ComfyUI stand-in has no ui.PreviewText: the dict form
    assert env.requested == [("small_16k", "fp16")]

    config = next(iter(env.companions.values()))
    for kind, known in [*env.chosen.items(), ("config", config)]:
        assert (env.folder / known.local_path).read_bytes() == payloads[kind], known.local_path
        line = next(line for line in text.splitlines() if known.local_path in line)
        assert line.startswith("fetched") and REPO in line
        assert env.download.format_size(len(payloads[kind])) in line
    assert files_under(env.folder) == sorted(k.local_path for k in [*env.chosen.values(), config])  # no staging
    assert "test licence" in text

    total = sum(len(payloads[k]) for k in env.chosen)
    values = [value for value, bar_total in env.progress]
    assert all(bar_total == total for _, bar_total in env.progress)
    assert values == sorted(values) and values[-1] == total and values[0] == 0

    adapters = pack_mod("nodes.adapters")  # the loaders recognise the fetched files by their tensors
    assert adapters.files_of_kind("network") == [env.chosen["network"].local_path]
    assert adapters.files_of_kind("vae") == [env.chosen["vae"].local_path]
    assert adapters.files_of_kind("vocoder") == [env.chosen["vocoder"].local_path]
    assert adapters.files_of_kind("clip") == [env.chosen["clip"].local_path]
    network_loader = pack_mod("nodes.loaders").MMAudioSyncNetworkLoader.GET_SCHEMA()
    assert network_loader.inputs[0].options == [env.chosen["network"].local_path]

    env.hub.requests.clear()  # queued again: everything is found, nothing is fetched
    again = run(env).args[0]
    assert env.hub.requests == []
    assert [line.split()[0] for line in again.splitlines()[1:6]] == ["found"] * 5


def test_only_selected_components_and_present_files_are_skipped(env: SimpleNamespace,
                                                                payloads: dict[str, bytes]) -> None:
    folder_paths = mod("folder_paths")
    user = env.tmp / "user_models"  # an mmaudio: path of extra_model_paths.yaml, listed before models/mmaudio
    folder_paths.add_model_folder_path("mmaudio", str(user))
    (user / "vendor" / "tiny_vocoder").mkdir(parents=True)
    (user / env.chosen["vocoder"].local_path).write_bytes(payloads["vocoder"])
    network_path = user / env.chosen["network"].local_path
    network_path.write_bytes(payloads["network"])

    text = run(env, feature_models=False).args[0]
    assert gets(env.hub) == ["config.json", "tiny_vae_16k_fp16.safetensors"]  # nothing for CLIP/Synchformer
    # the first mmaudio folder receives new files; a companion goes beside its file
    assert files_under(user) == sorted([env.chosen["network"].local_path, env.chosen["vocoder"].local_path,
                                        "vendor/tiny_vocoder/config.json", env.chosen["vae"].local_path])
    assert files_under(env.folder) == []
    assert (user / env.chosen["vae"].local_path).read_bytes() == payloads["vae"]
    assert f"found    {env.chosen['network'].local_path}" in text and str(user) in text
    assert "tiny_clip" not in text and "Synchformer" not in text.splitlines()[0]


def test_same_name_file_of_another_size_is_kept_and_reported(env: SimpleNamespace) -> None:
    env.folder.mkdir(parents=True)
    mine = env.folder / env.chosen["network"].local_path
    mine.write_bytes(b"my own fine-tune")
    text = run(env, decoder=False, feature_models=False).args[0]
    assert mine.read_bytes() == b"my own fine-tune" and env.hub.requests == []
    assert "KEPT" in text and "left untouched" in text and "16 bytes" in text


def test_offline_names_every_missing_file_repository_and_folder(env: SimpleNamespace,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 payloads: dict[str, bytes]) -> None:
    env.folder.mkdir(parents=True)
    (env.folder / env.chosen["network"].local_path).write_bytes(payloads["network"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing_error = pack_mod("mmaudio.weights").MissingWeightsError
    with pytest.raises(missing_error) as info:
        run(env)
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and str(env.folder) in message
    for kind in ("vae", "vocoder", "clip", "synchformer"):
        assert env.chosen[kind].name in message and env.chosen[kind].filename in message
    assert "config.json" in message and REPO in message
    assert env.chosen["network"].name not in message  # present: not reported missing
    assert env.hub.requests == [] and files_under(env.folder) == [env.chosen["network"].local_path]

    text = run(env, decoder=False, feature_models=False).args[0]  # offline and nothing missing: fine
    assert text.splitlines()[1].startswith("found")


def test_offline_with_the_published_catalogue(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = pack_mod("mmaudio.weights")
    monkeypatch.setattr(env.download, "files_for_variant", weights.files_for_variant)
    monkeypatch.setattr(env.download, "known_file", weights.known_file)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pack_mod("mmaudio.weights").MissingWeightsError) as info:
        run(env, variant="large_44k_v2", layout="Kijai fp16 safetensors")
    message = str(info.value)
    chosen = pack_mod("mmaudio.weights").files_for_variant("large_44k_v2", prefer="fp16")
    for known in chosen.values():
        assert known.name in message and known.repo_id in message
    assert "Kijai/MMAudio_safetensors" in message and str(env.folder) in message
    assert env.hub.requests == []


def test_checksum_mismatch_raises_and_leaves_no_file(env: SimpleNamespace, payloads: dict[str, bytes]) -> None:
    vae = env.chosen["vae"]
    env.hub.add(vae.repo_id, vae.filename, os.urandom(len(payloads["vae"])))  # same size, other bytes
    with pytest.raises(pack_mod("mmaudio.weights").ChecksumMismatchError) as info:
        run(env, feature_models=False)
    message = str(info.value)
    assert vae.sha256 in message and vae.name in message
    assert "Fetched before this error" in message and env.chosen["network"].local_path in message
    assert files_under(env.folder) == [env.chosen["network"].local_path]  # the checked network stays


def test_interrupt_mid_download_leaves_no_file(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    big = os.urandom(600_000)
    network = entry("network", "slow_network.safetensors", big)
    env.hub.add(network.repo_id, network.filename, big)
    env.hub.delay_s = 0.2  # 8 chunks: about 1.6 s per download
    monkeypatch.setitem(env.chosen, "network", network)
    mm = env.mm

    def cancel_when_bytes_arrive(value: int, total: int, preview: object, node_id: object = None) -> None:
        env.progress.append((value, total))
        if value > 0:
            mm.interrupt_current_processing(True)

    env.utils.set_progress_bar_global_hook(cancel_when_bytes_arrive)
    with pytest.raises(mm.InterruptProcessingException):
        run(env, decoder=False, feature_models=False)
    assert 0 < env.progress[-1][0] < len(big), "Cancel must stop the download part-way"
    assert wait_until_empty(env.folder, []) == []

    mm.interrupt_current_processing(False)  # the next run fetches the file completely
    env.utils.set_progress_bar_global_hook(None)
    env.hub.delay_s = 0.0
    run(env, decoder=False, feature_models=False)
    assert (env.folder / "slow_network.safetensors").read_bytes() == big


# ---- inputs, caching, UI ---------------------------------------------------------------------------------------
def test_layouts_map_to_the_catalogue_preferences(env: SimpleNamespace) -> None:
    for layout, prefer in [("original .pth", "original"), ("Kijai fp16 safetensors", "fp16"),
                           ("Kijai fp32 safetensors", "fp32")]:
        run(env, layout=layout, decoder=False, feature_models=False)
        assert env.requested[-1] == ("small_16k", prefer)
    with pytest.raises(pack_mod("mmaudio.errors").InvalidInputError, match="at least one"):
        run(env, network=False, decoder=False, feature_models=False)


def test_published_catalogue_plans(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real catalogue, no network: which files each layout asks for, and where a layout has no such file."""
    weights, download, folders = pack_mod("mmaudio.weights"), env.download, [env.folder]
    monkeypatch.setattr(download, "files_for_variant", weights.files_for_variant)
    monkeypatch.setattr(download, "known_file", weights.known_file)
    planned, notes = download.plan_files("large_44k_v2", "Kijai fp16 safetensors", ["network", "vocoder"], folders)
    assert [p.entry.local_path for p in planned] == [
        "mmaudio_large_44k_v2_fp16.safetensors", "nvidia/bigvgan_v2_44khz_128band_512x/config.json",
        "nvidia/bigvgan_v2_44khz_128band_512x/bigvgan_generator.pt"]
    assert len(notes) == 1 and "vocoder" in notes[0]  # Kijai publishes no vocoder
    planned, notes = download.plan_files("small_16k", "Kijai fp16 safetensors", ["network"], folders)
    assert planned[0].entry.source != "kijai" and "network" in notes[0] and planned[0].entry.name in notes[0]
    planned, notes = download.plan_files("small_16k", "original .pth", ["network", "vae", "vocoder", "clip",
                                                                          "synchformer"], folders)
    assert notes == [] and all(p.entry.source != "kijai" for p in planned)
    assert all(p.missing and p.folder == env.folder for p in planned)


def test_fingerprint_follows_the_files_on_disk(env: SimpleNamespace, payloads: dict[str, bytes]) -> None:
    node = env.download.MMAudioSyncDownloadWeights
    inputs = {"variant": "small_16k", "layout": "Kijai fp16 safetensors", "network": True, "decoder": False,
              "feature_models": False}
    before = node.fingerprint_inputs(**inputs)
    assert before == node.fingerprint_inputs(**inputs)
    env.folder.mkdir(parents=True)
    (env.folder / env.chosen["network"].local_path).write_bytes(payloads["network"])
    assert node.fingerprint_inputs(**inputs) != before
    broken = node.fingerprint_inputs(**{**inputs, "network": False})
    assert broken != broken  # NaN: always rerun, execute reports the problem
    assert env.hub.requests == []


def test_preview_text_is_used_when_comfyui_has_it(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    class PreviewText:
        def __init__(self, value: str, **kwargs: object) -> None:
            self.value = value

    monkeypatch.setattr(mod("comfy_api.latest").ui, "PreviewText", PreviewText, raising=False)
    output = run(env, decoder=False, feature_models=False)
    assert isinstance(output.ui, PreviewText) and output.ui.value == output.args[0]


def test_not_enough_disk_space_stops_before_downloading(env: SimpleNamespace,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env.download.shutil, "disk_usage", lambda _path: SimpleNamespace(free=1000))
    with pytest.raises(pack_mod("mmaudio.errors").MMAudioError, match="disk space"):
        run(env)
    assert env.hub.requests == []
