"""The node graph on small random-weight models, through the ComfyUI stand-in (tests/comfy_stub).

Loaders -> encode conditions -> sampler -> decode, as ComfyUI would call them: models handed to the memory
manager and loaded right before compute, progress per step, interrupts, pairing checks, CPU outputs and the
AUDIO format core nodes expect. Synchformer runs at its real width (one block), so only a few tests use video.
"""

from __future__ import annotations

import asyncio
import sys
from fractions import Fraction

import pytest
import torch

from .comfy_stub import tiny_weights
from .pack_loader import PACK_NAME, models_root_with, stubbed_pack, tiny_models_dir

SR = 16000


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    models = tiny_models_dir(base)
    (models / "notes.json").write_text("{}")  # not a weight file: never listed
    (models / "broken.safetensors").write_bytes(b"not a safetensors file at all")
    root = models_root_with(tmp_path_factory.mktemp("pipeline"), models)
    with stubbed_pack(root) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def nodes(pack):
    extension = asyncio.run(pack.comfy_entrypoint())
    return {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(extension.get_node_list())}


@pytest.fixture(scope="module")
def files():
    return tiny_weights.TinyModels(
        network="tiny_network_16k.safetensors", clip="tiny_clip.safetensors",
        synchformer="random_synchformer_fp16.safetensors", vae="tiny_vae_16k.safetensors",
        vocoder="tiny_vocoder_16k.safetensors", clip_dim=32, text_dim=32)


@pytest.fixture(scope="module")
def loaded(nodes, files):
    network = nodes["MMAudioSyncNetworkLoader"].execute(network=files.network, precision="auto")[0]
    features = nodes["MMAudioSyncFeatureModelsLoader"].execute(clip=files.clip, synchformer=files.synchformer,
                                                               precision="auto")[0]
    decoder = nodes["MMAudioSyncDecoderLoader"].execute(vae=files.vae, vocoder=files.vocoder, precision="auto")[0]
    return network, features, decoder


def mod(name: str):
    return sys.modules[name]


def errors(pack):
    return mod(f"{PACK_NAME}.mmaudio.errors")


def encode(nodes, features, **kwargs):
    args = {"prompt": "", "negative_prompt": "", "duration": 1.0, "mask_away_clip": False} | kwargs
    return nodes["MMAudioSyncEncodeConditions"].execute(feature_models=features, **args)


def sample(nodes, network, conditions, **kwargs):
    args = {"seed": 7, "steps": 3, "cfg": 4.5, "samples": 1} | kwargs
    return nodes["MMAudioSyncSampler"].execute(network=network, conditions=conditions, **args)[0]


# ---- loaders ---------------------------------------------------------------------------------------------------
def test_loaders_list_only_files_of_their_kind(nodes, files):
    def options(node_id, name):
        schema = nodes[node_id].GET_SCHEMA()
        return next(i for i in schema.inputs if i.id == name).options

    assert options("MMAudioSyncNetworkLoader", "network") == [files.network]
    assert options("MMAudioSyncFeatureModelsLoader", "clip") == [files.clip]
    assert options("MMAudioSyncFeatureModelsLoader", "synchformer") == [files.synchformer]
    assert options("MMAudioSyncDecoderLoader", "vae") == [files.vae]
    assert options("MMAudioSyncDecoderLoader", "vocoder") == [files.vocoder]


def test_a_wrong_file_is_named_in_the_error(pack, nodes, files):
    with pytest.raises(errors(pack).WrongCheckpointError) as caught:
        nodes["MMAudioSyncNetworkLoader"].execute(network=files.vae, precision="auto")
    assert files.vae in str(caught.value) and "network" in str(caught.value)
    with pytest.raises(errors(pack).WrongCheckpointError):
        nodes["MMAudioSyncDecoderLoader"].execute(vae=files.vocoder, vocoder=files.vocoder, precision="auto")
    with pytest.raises(FileNotFoundError, match="mmaudio model folders"):
        nodes["MMAudioSyncNetworkLoader"].execute(network="missing.safetensors", precision="auto")


def test_loading_hands_models_to_the_memory_manager_without_computing(loaded):
    mm = mod("comfy.model_management")
    patcher_type = mod("comfy.model_patcher").ModelPatcher
    manual_cast = mod("comfy.ops").manual_cast
    network, features, decoder = loaded
    for patcher in (network.patcher, features.clip, features.synchformer, decoder.patcher):
        assert isinstance(patcher, patcher_type)
        assert patcher.offload_device == torch.device("cpu")
        assert patcher.load_device == mm.get_torch_device()
        assert all(p.device.type == "cpu" for p in patcher.model.parameters())
    layers = [m for m in network.network.modules() if isinstance(m, torch.nn.Linear)]
    assert layers and all(isinstance(m, manual_cast.Linear) for m in layers), "network not built from comfy.ops"
    assert any(isinstance(m, manual_cast.Conv1d) for m in decoder.decoder.modules())
    assert network.mode == "16k" and decoder.mode == "16k" and decoder.sample_rate == SR


def test_fingerprint_follows_the_file(nodes, files):
    node = nodes["MMAudioSyncNetworkLoader"]
    assert node.fingerprint_inputs(network=files.network, precision="auto") == node.fingerprint_inputs(
        network=files.network, precision="auto")
    assert node.fingerprint_inputs(network=files.network, precision="auto") != node.fingerprint_inputs(
        network=files.network, precision="fp16")


# ---- text to audio -----------------------------------------------------------------------------------------------
def test_text_to_audio_gives_core_audio(nodes, loaded):
    network, features, decoder = loaded
    mm = mod("comfy.model_management")
    encoded = encode(nodes, features, prompt="rain on a tin roof", duration=1.0)
    conditions, duration = encoded
    assert duration == pytest.approx(1.0) and conditions.source == "text"
    (timing,) = encoded.ui["mmaudio_timing"]  # drawn by js/mmaudio_sync.js
    assert timing["source"] == "text" and timing["duration"] == pytest.approx(1.0) and timing["clip_frames"] == 0
    assert conditions.clip_features is None and conditions.sync_features is None
    mm.load_calls.clear()
    latents = sample(nodes, network, conditions)
    assert [c["models"] for c in mm.load_calls] == [[network.patcher]], "network must be loaded right before"
    assert latents.latents.device.type == "cpu" and latents.latents.dtype == torch.float32
    decoded = nodes["MMAudioSyncDecode"].execute(decoder=decoder, latents=latents)
    audio = decoded[0]
    assert set(audio) == {"waveform", "sample_rate"}
    (drawn,) = decoded.ui["mmaudio_waveform"]
    assert drawn["sample_rate"] == SR and drawn["label"] == "rain on a tin roof · seed 7"
    waveform = audio["waveform"]
    assert audio["sample_rate"] == SR
    assert waveform.dtype == torch.float32 and waveform.device.type == "cpu"
    assert waveform.shape == (1, 1, SR)
    assert torch.isfinite(waveform).all() and waveform.abs().max() > 0


def test_duration_zero_without_a_clip_is_the_training_length(nodes, loaded):
    _, features, _ = loaded
    conditions, duration = encode(nodes, features, prompt="wind", duration=0.0)
    assert duration == pytest.approx(8.0)
    assert (conditions.clip_seq_len, conditions.sync_seq_len) == (64, 192)


def test_prompt_lines_and_samples_form_one_batch_with_consecutive_seeds(nodes, loaded):
    network, features, _ = loaded
    conditions, _ = encode(nodes, features, prompt="dog barking\n\n  rain \n", negative_prompt="music")
    assert conditions.prompts.labels() == ("dog barking", "rain")
    assert conditions.text_features.shape[0] == 2 and conditions.negative_features.shape[0] == 1
    batch = sample(nodes, network, conditions, seed=11, samples=2)
    assert batch.latents.shape[0] == 4
    assert batch.seeds == (11, 12, 11, 12)
    assert batch.prompts == ("dog barking", "dog barking", "rain", "rain")
    single, _ = encode(nodes, features, prompt="rain", negative_prompt="music")
    alone = sample(nodes, network, single, seed=12, samples=1)
    torch.testing.assert_close(batch.latents[3:4], alone.latents, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batch.latents[2], batch.latents[3])


def test_negative_prompt_lines_pair_with_prompts(pack, nodes, loaded):
    _, features, _ = loaded
    paired, _ = encode(nodes, features, prompt="a\nb\nc", negative_prompt="x\ny\nz")
    assert paired.negative_features.shape[0] == 3
    with pytest.raises(errors(pack).InvalidInputError, match="negative_prompt"):
        encode(nodes, features, prompt="a\nb\nc", negative_prompt="x\ny")


def test_progress_advances_per_step_and_interrupt_stops_within_a_step(nodes, loaded):
    network, features, _ = loaded
    utils, mm = mod("comfy.utils"), mod("comfy.model_management")
    conditions, _ = encode(nodes, features, prompt="steps")
    seen: list[tuple[int, int]] = []
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        sample(nodes, network, conditions, steps=4)
        assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

        seen.clear()

        def cancel_after_first_step(value, total, preview, node_id=None):
            seen.append((value, total))
            if value == 1:
                mm.interrupt_current_processing(True)

        utils.set_progress_bar_global_hook(cancel_after_first_step)
        with pytest.raises(mm.InterruptProcessingException):
            sample(nodes, network, conditions, steps=10)
        assert seen == [(1, 10)], "the interrupt must be honoured at the next step"
    finally:
        utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert sample(nodes, network, conditions, steps=2).latents.shape[0] == 1  # ready for the next prompt


def test_cfg_below_one_runs_without_guidance(nodes, loaded):
    network, features, _ = loaded
    conditions, _ = encode(nodes, features, prompt="birds")
    guided = sample(nodes, network, conditions, cfg=4.5)
    plain = sample(nodes, network, conditions, cfg=0.0)
    assert torch.isfinite(plain.latents).all() and not torch.allclose(guided.latents, plain.latents)


# ---- pairing and input checks --------------------------------------------------------------------------------------
def test_steps_and_samples_are_checked(pack, nodes, loaded):
    network, features, _ = loaded
    conditions, _ = encode(nodes, features, prompt="x")
    with pytest.raises(errors(pack).InvalidInputError, match="steps"):
        sample(nodes, network, conditions, steps=0)
    with pytest.raises(errors(pack).InvalidInputError, match="samples"):
        sample(nodes, network, conditions, samples=0)


def test_conditions_for_other_lengths_are_refused(pack, nodes, loaded):
    import dataclasses

    network, features, _ = loaded
    conditions, _ = encode(nodes, features, prompt="x", duration=2.0)
    forged = dataclasses.replace(conditions, clip_features=torch.zeros(1, conditions.clip_seq_len + 8, 32))
    with pytest.raises(errors(pack).IncompatibleComponentsError, match="encode them again"):
        sample(nodes, network, forged)


def test_latents_of_another_mode_are_refused_by_the_decoder(pack, nodes, loaded):
    import dataclasses

    network, features, decoder = loaded
    conditions, _ = encode(nodes, features, prompt="x")
    latents = sample(nodes, network, conditions, steps=1)
    foreign = dataclasses.replace(latents, mode="44k")
    with pytest.raises(errors(pack).IncompatibleComponentsError, match=r"44\.1 kHz"):
        nodes["MMAudioSyncDecode"].execute(decoder=decoder, latents=foreign)


def test_visual_inputs_are_checked(pack, nodes, loaded):
    _, features, _ = loaded
    invalid = errors(pack).InvalidInputError
    with pytest.raises(invalid, match="zero frames"):
        encode(nodes, features, images=torch.zeros(0, 32, 32, 3), fps=25.0)
    with pytest.raises(invalid, match="fps"):
        encode(nodes, features, images=torch.zeros(20, 32, 32, 3), fps=0.0)
    with pytest.raises(invalid, match="either video or images"):
        encode(nodes, features, images=torch.zeros(20, 32, 32, 3), fps=25.0, video=object())
    with pytest.raises(invalid, match="duration"):
        encode(nodes, features, images=torch.zeros(1, 32, 32, 3), duration=0.0)


def test_still_image_gives_image_to_audio(nodes, loaded):
    _, features, _ = loaded
    image = torch.rand(1, 40, 56, 3)
    conditions, duration = encode(nodes, features, images=image, duration=2.0, prompt="engine")
    assert conditions.source == "image" and duration == pytest.approx(2.0)
    assert conditions.sync_features is None
    assert conditions.clip_features.shape == (1, 16, 32)
    assert torch.allclose(conditions.clip_features[0, 0], conditions.clip_features[0, -1])


def test_video_components_use_their_frame_rate(pack):
    adapters = mod(f"{PACK_NAME}.nodes.adapters")
    latest = mod("comfy_api.latest")
    frames = torch.rand(12, 16, 16, 3)
    video = latest.InputImpl.VideoFromComponents(latest.Types.VideoComponents(images=frames,
                                                                              frame_rate=Fraction(30000, 1001)))
    source = adapters.visual_source(None, None, video)
    assert source.frames is frames and source.fps == Fraction(30000, 1001) and source.times is None


# ---- video (Synchformer at its real width: a second or two each) -------------------------------------------------
def test_frames_with_fps_give_synced_conditions(nodes, loaded):
    network, features, decoder = loaded
    frames = torch.rand(20, 48, 64, 3)  # 0.8 s at 25 fps: one Synchformer segment
    progress: list[int] = []
    utils = mod("comfy.utils")
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: progress.append(value))
    try:
        encoded = encode(nodes, features, images=frames, fps=25.0, duration=0.0, prompt="steps")
    finally:
        utils.set_progress_bar_global_hook(None)
    conditions, duration = encoded
    (timing,) = encoded.ui["mmaudio_timing"]
    assert (timing["source"], timing["num_frames"], timing["fps"], timing["segments"]) == ("video", 20, 25.0, 1)
    assert conditions.source == "video" and 0.64 <= duration <= 0.8  # the clip's length at 8 and 25 fps
    assert conditions.clip_features.shape == (1, int(8 * duration), 32)
    assert conditions.sync_features.shape == (1, 8, 64)
    assert conditions.clip_features.device.type == "cpu" and conditions.sync_features.device.type == "cpu"
    assert len(progress) >= 4 and progress == sorted(progress)
    latents = sample(nodes, network, conditions, steps=2)
    audio = nodes["MMAudioSyncDecode"].execute(decoder=decoder, latents=latents)[0]
    assert audio["waveform"].shape == (1, 1, round(duration * SR))


def test_video_file_is_read_with_its_timestamps(tmp_path, nodes, loaded):
    import av
    import numpy as np

    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(17):
            image = np.full((48, 64, 3), i * 12, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    class FileVideo:  # what core LoadVideo hands over: a VIDEO backed by a file
        def get_stream_source(self):
            return str(path)

        def get_components(self):
            raise AssertionError("a file-backed VIDEO must be read from its file")

    _, features, _ = loaded
    conditions, duration = encode(nodes, features, video=FileVideo(), duration=0.0, mask_away_clip=True)
    assert 0.64 <= duration <= 0.68
    assert conditions.clip_features is None, "mask_away_clip drops the CLIP frames"
    assert conditions.sync_features.shape == (1, 8, 64)


def test_trimmed_video_file_gives_the_conditions_of_its_trimmed_frames(tmp_path, nodes, loaded):
    """A trimmed file-backed VIDEO (core Trim Video) is streamed from its file with the trim applied and gives
    the conditions of what its get_components() holds: the frames with int(start/tb) <= pts < int(end/tb), at the
    stream's frame rate (so timed from the first kept frame)."""
    import av
    import numpy as np

    path = tmp_path / "trim.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        ys, xs = np.mgrid[0:48, 0:64]
        for i in range(40):
            image = np.stack([(xs * 4 + i * 9) % 256, (ys * 5 + i * 3) % 256, np.full_like(xs, i * 6)], -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    start, length = 0.3, 0.9  # the start falls between frames 7 and 8

    class TrimmedVideo:  # what core Trim Video hands over: a view of the whole file
        def get_stream_source(self):
            return str(path)

        def get_active_trim_window(self):
            return start, length

        def has_pending_frame_edits(self):
            return False

        def get_components(self):
            raise AssertionError("a trimmed file-backed VIDEO must be streamed from its file")

    whole = mod(f"{PACK_NAME}.mmaudio.media").read_video_frames(path)
    kept = (whole.pts >= int(start / whole.time_base)) & (whole.pts < int((start + length) / whole.time_base))
    latest = mod("comfy_api.latest")
    components = latest.InputImpl.VideoFromComponents(latest.Types.VideoComponents(
        images=whole.frames[kept].float() / 255, frame_rate=whole.fps))

    _, features, _ = loaded
    got, got_duration = encode(nodes, features, video=TrimmedVideo(), duration=0.0, prompt="steps")
    want, want_duration = encode(nodes, features, video=components, duration=0.0, prompt="steps")
    assert int(kept.sum()) == 22 and got_duration == want_duration and 0.8 <= got_duration <= 0.88
    assert torch.equal(got.clip_features, want.clip_features)
    assert torch.equal(got.sync_features, want.sync_features)


# ---- precision ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp16", "fp8_e4m3fn"])
def test_narrow_precisions_store_layer_weights_narrow_and_still_sample(nodes, loaded, files, precision):
    _, features, _ = loaded
    network = nodes["MMAudioSyncNetworkLoader"].execute(network=files.network, precision=precision)[0]
    net = network.network
    linear = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    expected = {"fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}[precision]
    assert linear.weight.dtype == expected
    assert net.latent_mean.dtype in (torch.float32, torch.float16)  # statistics never go to 8 bits
    conditions, _ = encode(nodes, features, prompt="x")
    latents = sample(nodes, network, conditions, steps=2)
    assert torch.isfinite(latents.latents).all() and latents.latents.dtype == torch.float32


def test_compile_node_routes_sampling_through_torch_compile(nodes, loaded, monkeypatch):
    network, features, _ = loaded
    conditions, _ = encode(nodes, features, prompt="rain", duration=1.0)
    plain = sample(nodes, network, conditions)
    compiled_calls = []
    real_compile = torch.compile

    def eager_compile(fn, **kwargs):  # traces with dynamo, runs without generating code
        compiled_calls.append(kwargs.get("mode"))
        return real_compile(fn, backend="eager", dynamic=False)

    monkeypatch.setattr(torch, "compile", eager_compile)
    compiled_network = nodes["MMAudioSyncCompileNetwork"].execute(network=network, mode="cuda_graphs")[0]
    assert compiled_network.compile == "cuda_graphs" and network.compile == "off"
    assert compiled_network.patcher is network.patcher  # the same weights under the memory manager
    latents = sample(nodes, compiled_network, conditions)
    assert compiled_calls == ["reduce-overhead"]
    torch.testing.assert_close(latents.latents, plain.latents, rtol=1e-4, atol=1e-5)
    off = nodes["MMAudioSyncCompileNetwork"].execute(network=network, mode="off")[0]
    sample(nodes, off, conditions)
    assert compiled_calls == ["reduce-overhead"]
    torch._dynamo.reset()


# ---- audio in ------------------------------------------------------------------------------------------------------
def test_audio_in_regenerates_a_range_and_keeps_the_rest(pack, nodes, loaded):
    network, features, decoder = loaded
    tone = torch.sin(torch.arange(2 * 22050) / 22050 * 2 * torch.pi * 220).repeat(1, 2, 1) * 0.4  # stereo, 22.05 kHz
    encoded = nodes["MMAudioSyncEncodeAudio"].execute(decoder=decoder, audio={"waveform": tone, "sample_rate": 22050})
    source, seconds = encoded
    assert seconds == pytest.approx(2.0) and source.mode == "16k" and source.latents.shape == (1, 62, 20)
    conditions, _ = encode(nodes, features, prompt="a bell", duration=2.0)
    unchanged = sample(nodes, network, conditions, latents=source, denoise=0.0)
    assert torch.equal(unchanged.latents[:, :62], source.latents)
    marked = nodes["MMAudioSyncRegenerateRange"].execute(latents=source, start=0.5, end=1.0, fade=0.1)[0]
    regenerated = sample(nodes, network, conditions, latents=marked)
    first, last = round(0.5 * 31.25), round(1.0 * 31.25)
    assert torch.equal(regenerated.latents[:, :first], source.latents[:, :first])
    assert torch.equal(regenerated.latents[:, last:62], source.latents[:, last:])
    audio = nodes["MMAudioSyncDecode"].execute(decoder=decoder, latents=regenerated)[0]
    assert audio["waveform"].shape == (1, 1, 2 * SR)
    with pytest.raises(errors(pack).InvalidInputError, match="silent"):
        nodes["MMAudioSyncEncodeAudio"].execute(decoder=decoder, audio={"waveform": torch.zeros(1, 1, 8000),
                                                                        "sample_rate": 16000})
    with pytest.raises(errors(pack).InvalidInputError, match="denoise"):
        sample(nodes, network, conditions, denoise=0.5)
