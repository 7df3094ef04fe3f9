"""Node and command line are two drivers of one engine: the same request gives the same audio, and the same bad
input the same message. Every bad input the pack has a rule for is listed in BAD_INPUTS, once, for both hosts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import torch

from mmaudio.cli import main

from .pack_loader import PACK_NAME, models_root_with, stubbed_pack, tiny_models_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def graph(models: Path, tmp_path_factory: pytest.TempPathFactory):
    root = models_root_with(tmp_path_factory.mktemp("hosts"), models)
    with stubbed_pack(root) as pack:
        extension = asyncio.run(pack.comfy_entrypoint())
        nodes = {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(extension.get_node_list())}
        network = nodes["MMAudioSyncNetworkLoader"].execute(network="tiny_network_16k.safetensors",
                                                            precision="auto")[0]
        features = nodes["MMAudioSyncFeatureModelsLoader"].execute(
            clip="tiny_clip.safetensors", synchformer="random_synchformer_fp16.safetensors", precision="auto")[0]
        decoder = nodes["MMAudioSyncDecoderLoader"].execute(vae="tiny_vae_16k.safetensors",
                                                            vocoder="tiny_vocoder_16k.safetensors",
                                                            precision="auto")[0]
        yield pack, nodes, (network, features, decoder)


def _through_nodes(graph, *, prompt: str, negative: str, duration: float, seed: int, steps: int, cfg: float,
                   samples: int) -> torch.Tensor:
    _, nodes, (network, features, decoder) = graph
    conditions = nodes["MMAudioSyncEncodeConditions"].execute(
        feature_models=features, prompt=prompt, negative_prompt=negative, duration=duration,
        mask_away_clip=False)[0]
    latents = nodes["MMAudioSyncSampler"].execute(network=network, conditions=conditions, seed=seed, steps=steps,
                                                  cfg=cfg, samples=samples)[0]
    return nodes["MMAudioSyncDecode"].execute(decoder=decoder, latents=latents)[0]["waveform"]


def _cli_args(models: Path, out: Path, *, prompt: str, negative: str, duration: float, seed: int, steps: int,
              cfg: float, samples: int) -> list[str]:
    files = {"network": "tiny_network_16k.safetensors", "clip": "tiny_clip.safetensors",
             "synchformer": "random_synchformer_fp16.safetensors", "vae": "tiny_vae_16k.safetensors",
             "vocoder": "tiny_vocoder_16k.safetensors"}
    args = ["generate", "--prompt", prompt, "--negative-prompt", negative, "--duration", str(duration), "--seed",
            str(seed), "--steps", str(steps), "--cfg", str(cfg), "--samples", str(samples), "--out", str(out),
            "--device", "cpu", "--no-download", "--quiet"]
    for kind, name in files.items():
        args += [f"--{kind}", str(models / name)]
    return args


REQUEST = {"prompt": "rain on a tin roof\na dog barking", "negative": "music\nspeech", "duration": 1.3,
           "seed": 5, "steps": 3, "cfg": 4.5, "samples": 2}


def test_node_and_command_line_give_identical_audio(graph, models: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mmaudio import media

    written: dict[str, torch.Tensor] = {}

    def capture(path, waveform, sample_rate, format=None):
        written[Path(path).name] = torch.as_tensor(waveform).clone()
        Path(path).write_bytes(b"")
        return Path(path)

    monkeypatch.setattr(media, "write_audio", capture)
    assert main(_cli_args(models, tmp_path / "out.wav", **REQUEST)) == 0
    from_cli = torch.stack([written[f"out_{k:02d}.wav"] for k in range(4)])
    from_nodes = _through_nodes(graph, **REQUEST)
    assert from_nodes.shape == from_cli.shape == (4, 1, round(1.3 * 16000))
    assert torch.equal(from_nodes, from_cli)  # prompts x samples in the same order, seeds 5, 6, 5, 6


# Every input rule both hosts share: (request changes, the words the message must contain).
BAD_INPUTS = [
    ({"steps": 0}, "steps: expected a whole number of at least 1, got 0"),
    ({"samples": 0}, "samples: expected a whole number of at least 1, got 0"),
    ({"cfg": -1.0}, "cfg: expected a finite number >= 0"),
    ({"seed": -1}, "seed: expected an integer from 0 to 18446744073709551615"),
    ({"seed": 2**64}, "seed: expected an integer from 0 to 18446744073709551615"),
    ({"negative": "a\nb\nc"}, "negative_prompt: 3 lines for 2 prompts"),
    ({"prompt": "rain\n[2] thunder\nbirds"}, "prompt, line 3: expected a time in brackets at the start"),
    ({"prompt": "rain\n[1:7x] thunder"}, "prompt, line 2: [1:7x] is not a time"),
    ({"prompt": "rain\n[1:75] thunder"}, "prompt, line 2: [1:75] has more than 59"),
    ({"prompt": "rain\n[5] thunder", "negative": ""}, "prompt, line 2: [5s] starts at or after the end of the 1.3 s"),
    ({"duration": 5000.0}, "duration: 5000 s is longer than the longest soundtrack, 3600 s"),
    ({"duration": 0.3}, "duration 0.3 s is too short: at least 0.64 s is needed"),
]


@pytest.mark.parametrize("changes, message", BAD_INPUTS, ids=[m.split(":")[0] + str(i) for i, (_, m) in
                                                               enumerate(BAD_INPUTS)])
def test_bad_inputs_get_the_same_message_from_node_and_command_line(graph, models: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    changes: dict, message: str) -> None:
    pack = graph[0]
    request = {**REQUEST, "steps": 1, **changes}
    errors = sys.modules[f"{PACK_NAME}.mmaudio.errors"]
    with pytest.raises(errors.MMAudioError) as node_error:
        _through_nodes(graph, **request)
    assert message in str(node_error.value)
    del pack
    out = tmp_path / "never.wav"
    assert main(_cli_args(models, out, **request)) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists() and not list(tmp_path.iterdir())
