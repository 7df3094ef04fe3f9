"""Reading and loading weights files: headers without data, both layouts, every bad file, folder listing,
precision handling and meta-device construction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mmaudio.errors import InvalidInputError, WrongCheckpointError
from mmaudio.ops import default_ops
from mmaudio.weights import (
    FP32_KEYS,
    cast_state_dict,
    compute_dtype_for,
    dtype_name,
    identify_file,
    instantiate_on_meta,
    layer_weight_keys,
    list_files_of_kind,
    load_component,
    load_into,
    load_state_dict_file,
    parse_dtype,
    read_header,
    read_shapes,
    require_kind,
    scan_folders,
)
from tests.weights_factory import original_layout, write_kijai, write_original

# component -> (kind, file name of the original release)
COMPONENTS = {
    "small_16k": ("network", "mmaudio_small_16k.pth"),
    "vae_16k": ("vae", "v1-16.pth"),
    "vae_44k": ("vae", "v1-44.pth"),
    "vocoder_16k": ("vocoder", "best_netG.pt"),
    "vocoder_44k": ("vocoder", "bigvgan_generator.pt"),
    "synchformer": ("synchformer", "synchformer_state_dict.pth"),
    "clip": ("clip", "open_clip_pytorch_model.bin"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Path, dict[str, torch.Tensor]]]:
    """(component, "original"|"kijai") -> (path, the component's state dict as written)."""
    root = tmp_path_factory.mktemp("weights")
    out = {}
    for component, (_kind, name) in COMPONENTS.items():
        path = root / "original" / name
        out[component, "original"] = (path, write_original(component, path))
        path = root / "kijai" / f"{component}_fp16.safetensors"
        out[component, "kijai"] = (path, write_kijai(component, path))
    return out


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---- reading headers -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["original", "kijai"])
@pytest.mark.parametrize("component", list(COMPONENTS))
def test_read_shapes_in_both_layouts(files, component: str, layout: str) -> None:
    path, state_dict = files[component, layout]
    shapes = read_shapes(path)
    prefix = "generator." if (layout == "original" and component.startswith("vocoder")) else ""
    for key, tensor in state_dict.items():
        assert shapes[prefix + key] == tuple(tensor.shape), key
    if component == "synchformer":  # both files keep the audio branch next to the visual encoder
        assert any(k.startswith("afeat_extractor.") for k in shapes)


def test_header_dtypes_and_container(files) -> None:
    header = read_header(files["vae_44k", "kijai"][0])
    assert header.container == "safetensors" and header.dtypes() == {"F16"}
    header = read_header(files["vae_44k", "original"][0])
    assert header.container == "torch-zip" and header.dtypes() == {"F32"}


def test_safetensors_shapes_come_from_the_header_alone(tmp_path: Path, files) -> None:
    """Overwriting every byte of tensor data leaves the shapes readable: nothing but the header is read."""
    source = files["vae_16k", "kijai"][0]
    path = tmp_path / "scribbled.safetensors"
    data = bytearray(source.read_bytes())
    header_end = 8 + int.from_bytes(data[:8], "little")
    data[header_end:] = os.urandom(len(data) - header_end)
    path.write_bytes(bytes(data))
    assert read_shapes(path) == read_shapes(source)


def test_header_cache_follows_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    first = read_header(path)
    assert read_header(path) is first
    save_file({"x": torch.zeros(3), "y": torch.zeros(1)}, str(path))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert read_shapes(path) == {"x": (3,), "y": (1,)}


def test_legacy_torch_format_is_read(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"generator": {"w": torch.ones(2, 3)}, "epoch": 7}, path, _use_new_zipfile_serialization=False)
    header = read_header(path)
    assert header.container == "torch-legacy"
    assert header.shapes() == {"generator.w": (2, 3)}
    assert header.metadata["epoch"] == "7"
    assert load_state_dict_file(path)["w"].shape == (2, 3)


def test_container_comes_from_content_not_name(tmp_path: Path, files) -> None:
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(files["vocoder_44k", "kijai"][0].read_bytes())
    assert read_header(renamed).container == "safetensors"
    assert identify_file(renamed).variant == "bigvgan_v2_44k"
    legacy = tmp_path / "legacy_named.safetensors.ckpt"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert read_shapes(legacy) == {"w": (3,)}


def test_fp8_checkpoint_is_identified(tmp_path: Path, files) -> None:
    state_dict = files["vae_44k", "original"][1]
    path = tmp_path / "vae_fp8.safetensors"
    save_file(cast_state_dict(state_dict, "fp8_e4m3fn", keep_fp32=FP32_KEYS["vae"]), str(path))
    identity = identify_file(path)
    assert (identity.kind, identity.mode) == ("vae", "44k")
    assert "[safetensors, mixed (" in identity.description and "fp8_e4m3fn)]" in identity.description
    loaded, _ = load_component(path, "vae")
    assert loaded["decoder.conv_in.weight"].dtype is torch.float8_e4m3fn
    assert loaded["data_mean"].dtype is torch.float32


# ---- bad files ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["original", "kijai"])
def test_truncated_files_are_reported(tmp_path: Path, files, layout: str) -> None:
    source = files["vae_16k", layout][0]
    data = source.read_bytes()
    path = _bad(tmp_path, "cut" + source.suffix, data[: len(data) // 2])
    with pytest.raises(WrongCheckpointError, match="truncated or corrupt") as info:
        read_shapes(path)
    assert path.name in str(info.value)
    with pytest.raises(WrongCheckpointError, match=path.name):
        load_state_dict_file(path)


def test_truncated_legacy_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "legacy_cut.pt"
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(WrongCheckpointError, match=r"legacy_cut\.pt' is truncated or corrupt"):
        read_shapes(path)


def test_safetensors_with_trailing_garbage_or_cut_header(tmp_path: Path, files) -> None:
    data = files["vae_16k", "kijai"][0].read_bytes()
    with pytest.raises(WrongCheckpointError, match="unexpected bytes after the last tensor"):
        read_shapes(_bad(tmp_path, "long.safetensors", data + b"\0" * 16))
    with pytest.raises(WrongCheckpointError, match="header needs"):
        read_shapes(_bad(tmp_path, "short.safetensors", data[:100]))
    header_len = int.from_bytes(data[:8], "little")
    broken = data[:8] + b"{" + b"x" * (header_len - 1) + data[8 + header_len:]
    with pytest.raises(WrongCheckpointError, match="not valid JSON"):
        read_shapes(_bad(tmp_path, "json.safetensors", broken))


@pytest.mark.parametrize("name", ["noise.pth", "noise.safetensors", "noise.bin", "empty.pt"])
def test_random_bytes_and_empty_files(tmp_path: Path, name: str) -> None:
    data = b"" if name.startswith("empty") else os.urandom(4096)
    path = _bad(tmp_path, name, data)
    with pytest.raises(WrongCheckpointError, match="truncated or corrupt") as info:
        read_shapes(path)
    assert name in str(info.value)


def test_plain_pickle_is_not_a_checkpoint(tmp_path: Path) -> None:
    import pickle

    path = _bad(tmp_path, "plain.pth", b"\x80\x02" + pickle.dumps({"a": 1}, protocol=2)[2:])
    with pytest.raises(WrongCheckpointError, match="corrupt"):
        read_shapes(path)


_CALLED: list[str] = []


def _record_call(tag: str) -> str:
    _CALLED.append(tag)
    return tag


class _Payload:
    """Unpickling this calls a function: exactly what a safe loader must refuse to do."""

    def __reduce__(self):
        return (_record_call, ("code ran",))


class _TrainingConfig:
    def __init__(self) -> None:
        self.lr = 1e-4


@pytest.mark.parametrize("payload", [_Payload(), _TrainingConfig()], ids=["reduce", "custom-class"])
def test_pickles_that_need_code_are_refused(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "unsafe.pth"
    torch.save({"weights": {"w": torch.zeros(2)}, "extra": payload}, path)
    _CALLED.clear()
    for action in (read_shapes, load_state_dict_file, identify_file):
        with pytest.raises(WrongCheckpointError, match="would run Python code") as info:
            action(path)
        assert "unsafe.pth" in str(info.value)
    assert "test_weights_loading" in str(info.value)  # names the type it refused
    assert _CALLED == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth"):
        read_shapes(tmp_path / "nothing.pth")


# ---- loading components ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["original", "kijai"])
@pytest.mark.parametrize("component", list(COMPONENTS))
def test_load_component_gives_module_key_names(files, component: str, layout: str) -> None:
    kind = COMPONENTS[component][0]
    path, written = files[component, layout]
    state_dict, identity = load_component(path, kind)
    assert identity.kind == kind
    assert set(state_dict) == set(written)
    for key, tensor in written.items():
        assert torch.equal(state_dict[key], tensor), key


def test_load_component_casts_on_request(files) -> None:
    state_dict, _ = load_component(files["vocoder_44k", "kijai"][0], "vocoder", dtype=torch.float32)
    assert {t.dtype for t in state_dict.values()} == {torch.float32}


def test_load_state_dict_file_unwraps_known_nestings(tmp_path: Path, files) -> None:
    path, written = files["vocoder_16k", "original"]
    assert set(load_state_dict_file(path)) == set(written)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}}, wrapped)
    assert set(load_state_dict_file(wrapped)) == {"a.weight", "b.bias"}


def test_combined_vae_and_vocoder_file(tmp_path: Path, files) -> None:
    vae = files["vae_16k", "original"][1]
    vocoder = files["vocoder_16k", "original"][1]
    path = tmp_path / "combined.safetensors"
    save_file({**{f"vae.{k}": v for k, v in vae.items()}, **{f"vocoder.{k}": v for k, v in vocoder.items()}},
              str(path))
    assert set(load_component(path, "vae")[0]) == set(vae)
    assert set(load_component(path, "vocoder")[0]) == set(vocoder)


def test_wrong_kind_says_what_the_file_is(files) -> None:
    path = files["vae_44k", "kijai"][0]
    with pytest.raises(WrongCheckpointError) as info:
        require_kind(path, "network")
    message = str(info.value)
    assert "is not an MMAudio flow network" in message and "MMAudio VAE, 44.1 kHz" in message
    assert path.name in message


def test_recognised_but_broken_file_is_refused(tmp_path: Path, files) -> None:
    written = files["small_16k", "kijai"][1]
    path = tmp_path / "no_stats.safetensors"
    save_file({k: v for k, v in written.items() if k != "latent_std"}, str(path))
    with pytest.raises(WrongCheckpointError, match=r"cannot be loaded: .*latent_std"):
        load_component(path, "network")


def test_identify_file_adds_container_and_dtype(files) -> None:
    assert identify_file(files["vocoder_44k", "original"][0]).description.endswith("[PyTorch file, fp32]")
    assert identify_file(files["vocoder_44k", "kijai"][0]).description.endswith("[safetensors, fp16]")


# ---- listing folders -------------------------------------------------------------------------------------------------

def test_each_kind_lists_only_its_files(tmp_path: Path, files) -> None:
    first, second = tmp_path / "models_a", tmp_path / "models_b"
    layout = {
        first / "net.safetensors": files["small_16k", "kijai"][0],
        first / "sub" / "v1-44.pth": files["vae_44k", "original"][0],
        first / "nvidia" / "bigvgan_v2_44khz_128band_512x" / "bigvgan_generator.pt": files["vocoder_44k",
                                                                                           "original"][0],
        first / "best_netG.pt": files["vocoder_16k", "original"][0],
        second / "net.safetensors": files["vae_16k", "kijai"][0],  # shadowed by first/net.safetensors
        second / "clip_any_name.bin": files["clip", "original"][0],
        second / "sync.safetensors": files["synchformer", "kijai"][0],
        first / ".mmaudio-download-1234" / "partial.pth": files["small_16k", "original"][0],
    }
    for target, source in layout.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    (first / "nvidia" / "bigvgan_v2_44khz_128band_512x" / "config.json").write_text("{}")
    (first / "broken.safetensors").write_bytes(files["vae_16k", "kijai"][0].read_bytes()[:500])
    (first / "readme.txt").write_text("hello")

    (first / "sub" / "loop").symlink_to(first, target_is_directory=True)  # cycles do not hang the scan
    folders = [first, second]

    def names(kind: str, mode: str | None = None) -> list[str]:
        return [f.name for f in list_files_of_kind(folders, kind, mode=mode)]

    assert names("network") == ["net.safetensors"]
    assert names("vae") == ["sub/v1-44.pth"]
    assert names("vocoder") == ["best_netG.pt", "nvidia/bigvgan_v2_44khz_128band_512x/bigvgan_generator.pt"]
    assert names("vocoder", mode="44k") == ["nvidia/bigvgan_v2_44khz_128band_512x/bigvgan_generator.pt"]
    assert names("clip") == ["clip_any_name.bin"]
    assert names("synchformer") == ["sync.safetensors"]
    found = list_files_of_kind(folders, "network")[0]
    assert found.path == first / "net.safetensors" and found.storage == "fp16"
    assert found.identity.mode == "16k"

    scanned = {name: identity for name, _path, identity in scan_folders(folders)}
    assert isinstance(scanned["broken.safetensors"], str) and "truncated" in scanned["broken.safetensors"]
    assert "readme.txt" not in scanned and not any(n.startswith(".") for n in scanned)
    with pytest.raises(ValueError, match="kind must be one of"):
        list_files_of_kind(folders, "decoder")


# ---- precision ---------------------------------------------------------------------------------------------------

def test_parse_dtype_names_and_aliases() -> None:
    assert parse_dtype("fp16") is torch.float16
    assert parse_dtype("BF16") is torch.bfloat16
    assert parse_dtype("float32") is torch.float32
    assert parse_dtype("fp8_e4m3fn") is torch.float8_e4m3fn
    assert parse_dtype(torch.float16) is torch.float16
    assert dtype_name(torch.float8_e4m3fn) == "fp8_e4m3fn"
    with pytest.raises(InvalidInputError, match="Unknown weight dtype 'int8'"):
        parse_dtype("int8")
    with pytest.raises(InvalidInputError):
        parse_dtype(torch.int8)


def test_compute_dtype() -> None:
    assert compute_dtype_for("fp8_e4m3fn", bf16_supported=True) is torch.bfloat16
    assert compute_dtype_for("fp8_e4m3fn", bf16_supported=False) is torch.float16
    assert compute_dtype_for("bf16", bf16_supported=False) is torch.float32
    assert compute_dtype_for("fp16", bf16_supported=False) is torch.float16
    assert compute_dtype_for("fp32") is torch.float32
    assert compute_dtype_for("fp8_e4m3fn", "cpu") is torch.bfloat16


class _Tiny(nn.Module):
    """A module in the library's style: layers from ``ops``, a raw parameter, a computed buffer."""

    def __init__(self, ops=None) -> None:
        super().__init__()
        ops = ops or default_ops()
        self.proj = ops.Linear(4, 8)
        self.conv = ops.Conv1d(8, 8, 3)
        self.norm = ops.LayerNorm(8)
        self.token = nn.Parameter(torch.zeros(3, 8))
        self.latent_mean = nn.Parameter(torch.zeros(1, 1, 8), requires_grad=False)
        self.register_buffer("steps", torch.zeros(2, dtype=torch.long))
        self.register_buffer("freqs", torch.empty(4), persistent=False)
        self.rebuilt = 0

    def rebuild_buffers(self) -> None:
        self.freqs = torch.arange(4, dtype=torch.float32, device="cpu")
        self.rebuilt += 1


def _tiny_state_dict() -> dict[str, torch.Tensor]:
    return {k: (torch.randn(v.shape) * 100 if v.is_floating_point() else torch.arange(v.numel()).reshape(v.shape))
            for k, v in _Tiny().state_dict().items()}


def test_cast_state_dict_keeps_statistics_in_fp32() -> None:
    state_dict = _tiny_state_dict()
    out = cast_state_dict(state_dict, "fp16", keep_fp32=FP32_KEYS["network"])
    assert out["latent_mean"].dtype is torch.float32
    assert out["proj.weight"].dtype is torch.float16 and out["token"].dtype is torch.float16
    assert out["steps"].dtype is torch.long and torch.equal(out["steps"], state_dict["steps"])


def test_cast_state_dict_fp8_narrows_only_layer_weights() -> None:
    state_dict = _tiny_state_dict()
    state_dict["proj.weight"][0, 0] = 1e6  # beyond fp8's range: clamped, not NaN
    narrow = layer_weight_keys(_Tiny())
    assert narrow == {"proj.weight", "conv.weight"}
    out = cast_state_dict(state_dict, "fp8_e4m3fn", keep_fp32=FP32_KEYS["network"], narrow_keys=narrow,
                          compute_dtype=torch.bfloat16)
    assert out["proj.weight"].dtype is torch.float8_e4m3fn and out["conv.weight"].dtype is torch.float8_e4m3fn
    assert out["proj.weight"].float()[0, 0] == torch.finfo(torch.float8_e4m3fn).max
    assert out["token"].dtype is torch.bfloat16 and out["proj.bias"].dtype is torch.bfloat16
    assert out["norm.weight"].dtype is torch.bfloat16
    assert out["latent_mean"].dtype is torch.float32


def test_fp8_weights_run_through_ops_layers() -> None:
    module = _Tiny()
    state_dict = cast_state_dict(module.state_dict(), "fp8_e4m3fn", narrow_keys=layer_weight_keys(module))
    load_into(module, state_dict, strict=False)
    y = module.proj(torch.randn(2, 4, dtype=torch.bfloat16))
    assert y.dtype is torch.bfloat16 and torch.isfinite(y.float()).all()


# ---- meta construction ------------------------------------------------------------------------------------------

def test_instantiate_on_meta_and_load_into_assign() -> None:
    module = instantiate_on_meta(_Tiny)
    assert all(p.is_meta for p in module.parameters())
    state_dict = _tiny_state_dict()
    loaded = load_into(module, state_dict, source="tiny.safetensors")
    assert loaded is module and module.rebuilt == 1
    assert module.proj.weight.data_ptr() == state_dict["proj.weight"].data_ptr()  # adopted, not copied
    assert module.freqs.dtype is torch.float32 and not module.freqs.is_meta
    assert not any(t.is_meta for t in [*module.parameters(), *module.buffers()])


def test_load_into_names_what_does_not_fit() -> None:
    state_dict = _tiny_state_dict()
    bad = {**state_dict, "proj.weight": torch.zeros(8, 5), "extra.weight": torch.zeros(1)}
    del bad["token"]
    with pytest.raises(WrongCheckpointError) as info:
        load_into(instantiate_on_meta(_Tiny), bad, source="other.pth")
    message = str(info.value)
    assert "'other.pth' does not fit _Tiny" in message
    assert "proj.weight [8, 5] (module has [8, 4])" in message
    assert "token" in message and "extra.weight" in message


def test_load_into_rejects_tensors_left_on_meta() -> None:
    state_dict = _tiny_state_dict()
    del state_dict["token"]
    with pytest.raises(WrongCheckpointError, match=r"without values .*token"):
        load_into(instantiate_on_meta(_Tiny), state_dict, strict=False)

    class NoRebuild(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("table", torch.empty(3), persistent=False)

    with pytest.raises(WrongCheckpointError, match="table"):
        load_into(instantiate_on_meta(NoRebuild), {"lin.weight": torch.zeros(2, 2), "lin.bias": torch.zeros(2)})


def test_load_into_rebuilds_children() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _Tiny()

    module = load_into(instantiate_on_meta(Outer), {f"inner.{k}": v for k, v in _tiny_state_dict().items()})
    assert module.inner.rebuilt == 1 and not module.inner.freqs.is_meta


def test_original_layout_helper_matches_the_manifests() -> None:
    """The factory nests BigVGAN under 'generator' as the manifests say the originals do."""
    from tests.parity.cases import load_manifest

    assert "'generator'" in load_manifest("bigvgan_16k_best_netG.json")["format"]["layout"]
    assert set(original_layout("vocoder_16k", {"a": torch.zeros(1)})) == {"generator"}


# ---- hand-over to the library's loaders ------------------------------------------------------------------------

@pytest.mark.parametrize(("component", "layout", "module", "loader"), [
    ("small_16k", "kijai", "mmaudio.model", "build_network_from_state_dict"),
    ("vae_44k", "original", "mmaudio.vae", "load_vae"),
    ("vocoder_16k", "original", "mmaudio.vocoder", "load_vocoder"),
])
def test_loaded_components_build_the_library_modules(files, component: str, layout: str, module: str,
                                                      loader: str) -> None:
    """What load_component returns is what the model, VAE and vocoder loaders take (scaled files are real,
    smaller checkpoints). Synchformer and CLIP are built at their published size only, so scaled copies of them
    serve identification tests alone."""
    build = getattr(pytest.importorskip(module), loader)
    state_dict, _ = load_component(files[component, layout][0], COMPONENTS[component][0])
    built = build(state_dict)
    assert isinstance(built, nn.Module)
    assert not any(t.is_meta for t in [*built.parameters(), *built.buffers()])
