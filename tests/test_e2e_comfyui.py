"""End to end against a real ComfyUI (``COMFYUI_PATH``), on the CPU, over its HTTP and websocket API.

The pack is put on ComfyUI's custom-node path without copying it: a ``custom_nodes:`` entry of a temporary
``extra_model_paths.yaml`` points to a folder holding a symlink to this repository, and an ``mmaudio:`` entry to
small random-weight model files. Video-to-audio prompts are submitted through ``/prompt``; the AUDIO is checked
through core SaveAudio, PreviewAudio, CreateVideo and SaveVideo, the results through ``/history`` and ``/view``.
An interrupt in the middle of sampling must leave ComfyUI ready for the next prompt.

Python for ComfyUI: ``COMFYUI_PYTHON`` or this interpreter. Skipped only when ``COMFYUI_PATH`` is unset.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mmaudio.engine.windows import plan_windows

from .comfy_stub import tiny_weights
from .video_factory import write_moving_bar_video

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "comfyui-mmaudio-sync"
OUR_NODES = ("MMAudioSyncNetworkLoader", "MMAudioSyncFeatureModelsLoader", "MMAudioSyncDecoderLoader",
             "MMAudioSyncEncodeConditions", "MMAudioSyncSampler", "MMAudioSyncDecode", "MMAudioSyncCompileNetwork")
CLIP_FRAMES, CLIP_FPS = 20, 25  # 0.8 s: one Synchformer segment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set (path of a ComfyUI checkout)"),
]


# ---- a minimal websocket client (stdlib only; server frames are never masked) ------------------------------------
class WebSocket:
    def __init__(self, host: str, port: int, path: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON message, or None after ``timeout`` seconds without one (binary previews skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                first, second = self._read(2)
            except TimeoutError:
                return None
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            self.sock.settimeout(30)
            payload = self._read(length)
            opcode = first & 0x0F
            if opcode == 1:
                return json.loads(payload.decode())
            if opcode == 8:
                raise ConnectionError("websocket closed by the server")

    def close(self) -> None:
        self.sock.close()


# ---- the server ---------------------------------------------------------------------------------------------------
@dataclass
class Comfy:
    host: str
    port: int
    process: subprocess.Popen
    log: Path
    input_dir: Path
    models: tiny_weights.TinyModels
    client_id: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return response.read()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise AssertionError(f"POST {path} -> {error.code}: {error.read().decode()[:3000]}") from error
        return json.loads(raw) if raw.strip() else None

    def queue(self, prompt: dict[str, Any]) -> str:
        answer = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        assert not answer.get("node_errors"), answer
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            assert self.process.poll() is None, f"ComfyUI exited:\n{self.tail()}"
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s\n{self.tail()}")

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_clip(path: Path, frames: int = CLIP_FRAMES, fps: int = CLIP_FPS) -> None:
    write_moving_bar_video(path, frames=frames, fps=fps, step=3)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory) -> Iterator[Comfy]:
    root = Path(COMFYUI_PATH).expanduser().resolve()
    if not (root / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={COMFYUI_PATH} is not a ComfyUI checkout (no main.py)")
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable
    base = tmp_path_factory.mktemp("comfyui_e2e")
    models = tiny_weights.write_models(base / "models" / "mmaudio")
    custom = base / "custom_nodes"
    custom.mkdir()
    (custom / PACK_DIR_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    dirs = {name: base / name for name in ("input", "output", "temp", "user")}
    for folder in dirs.values():
        folder.mkdir()
    _write_clip(dirs["input"] / "clip.mp4")
    yaml_path = base / "extra_model_paths.yaml"
    yaml_path.write_text(f"mmaudio_sync_e2e:\n    base_path: {base}\n    mmaudio: models/mmaudio\n"
                         f"    custom_nodes: custom_nodes\n")
    port = _free_port()
    log = base / "comfyui.log"
    command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
               "--extra-model-paths-config", str(yaml_path), "--output-directory", str(dirs["output"]),
               "--input-directory", str(dirs["input"]), "--temp-directory", str(dirs["temp"]),
               "--user-directory", str(dirs["user"]), "--database-url", f"sqlite:///{base / 'comfy.db'}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=root, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = Comfy("127.0.0.1", port, process, log, dirs["input"], models, client_id=uuid.uuid4().hex)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{server.tail()}")
            try:
                server.get("/object_info/MMAudioSyncSampler")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not come up in 300 s:\n{server.tail()}")
                time.sleep(1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- prompts ------------------------------------------------------------------------------------------------------
def _loaders(models: tiny_weights.TinyModels) -> dict[str, Any]:
    return {
        "net": {"class_type": "MMAudioSyncNetworkLoader",
                "inputs": {"network": models.network, "precision": "auto"}},
        "feat": {"class_type": "MMAudioSyncFeatureModelsLoader",
                 "inputs": {"clip": models.clip, "synchformer": models.synchformer, "precision": "auto"}},
        "dec": {"class_type": "MMAudioSyncDecoderLoader",
                "inputs": {"vae": models.vae, "vocoder": models.vocoder, "precision": "auto"}},
    }


def _video_to_audio_prompt(models: tiny_weights.TinyModels) -> dict[str, Any]:
    return _loaders(models) | {
        "load": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["load", 0]}},
        # IMAGE + fps path -> one sample -> SaveAudio and CreateVideo/SaveVideo
        "enc_images": {"class_type": "MMAudioSyncEncodeConditions",
                       "inputs": {"feature_models": ["feat", 0], "images": ["parts", 0], "fps": ["parts", 2],
                                  "prompt": "footsteps on gravel", "negative_prompt": "music", "duration": 0.0,
                                  "mask_away_clip": False}},
        # the image path samples through torch.compile (the real backend, inside ComfyUI's process)
        "compiled": {"class_type": "MMAudioSyncCompileNetwork", "inputs": {"network": ["net", 0], "mode": "compile"}},
        "sample_images": {"class_type": "MMAudioSyncSampler",
                          "inputs": {"network": ["compiled", 0], "conditions": ["enc_images", 0], "seed": 5,
                                     "steps": 4, "cfg": 4.5, "samples": 1}},
        "audio_images": {"class_type": "MMAudioSyncDecode",
                         "inputs": {"decoder": ["dec", 0], "latents": ["sample_images", 0]}},
        "save_audio": {"class_type": "SaveAudio",
                       "inputs": {"audio": ["audio_images", 0], "filename_prefix": "mmaudio_e2e/images"}},
        "make_video": {"class_type": "CreateVideo",
                       "inputs": {"images": ["parts", 0], "fps": ["parts", 2], "audio": ["audio_images", 0]}},
        "save_video": {"class_type": "SaveVideo",
                       "inputs": {"video": ["make_video", 0], "filename_prefix": "mmaudio_e2e/video",
                                  "format": "auto", "codec": "auto"}},
        # VIDEO path (decoded from the file with its timestamps) -> two samples, two prompts -> PreviewAudio
        "enc_video": {"class_type": "MMAudioSyncEncodeConditions",
                      "inputs": {"feature_models": ["feat", 0], "video": ["load", 0],
                                 "prompt": "footsteps\nrain", "negative_prompt": "", "duration": 0.0,
                                 "mask_away_clip": True}},
        "sample_video": {"class_type": "MMAudioSyncSampler",
                         "inputs": {"network": ["net", 0], "conditions": ["enc_video", 0], "seed": 9,
                                    "steps": 3, "cfg": 4.5, "samples": 2}},
        "audio_video": {"class_type": "MMAudioSyncDecode",
                        "inputs": {"decoder": ["dec", 0], "latents": ["sample_video", 0]}},
        "preview": {"class_type": "PreviewAudio", "inputs": {"audio": ["audio_video", 0]}},
    }


def _long_sampling_prompt(models: tiny_weights.TinyModels, seed: int) -> dict[str, Any]:
    return _loaders(models) | {
        "enc": {"class_type": "MMAudioSyncEncodeConditions",
                "inputs": {"feature_models": ["feat", 0], "prompt": "a long drone", "negative_prompt": "",
                           "duration": 30.0, "mask_away_clip": False}},
        "sample": {"class_type": "MMAudioSyncSampler",
                   "inputs": {"network": ["net", 0], "conditions": ["enc", 0], "seed": seed, "steps": 500,
                              "cfg": 4.5, "samples": 32}},
        "decode": {"class_type": "MMAudioSyncDecode", "inputs": {"decoder": ["dec", 0], "latents": ["sample", 0]}},
        "preview": {"class_type": "PreviewAudio", "inputs": {"audio": ["decode", 0]}},
    }


def _audio_info(data: bytes, suffix: str) -> tuple[int, int, float]:
    """(sample rate, channels, seconds) of an encoded audio or video file."""
    import io

    import av

    with av.open(io.BytesIO(data), format=None) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, stream.channels, samples / stream.rate


def _view(comfy: Comfy, record: dict[str, Any]) -> bytes:
    query = urllib.parse.urlencode({"filename": record["filename"], "subfolder": record.get("subfolder", ""),
                                    "type": record["type"]})
    return comfy.get_bytes(f"/view?{query}")


# ---- tests --------------------------------------------------------------------------------------------------------
def test_nodes_are_registered_with_their_schema(comfy):
    info = comfy.get("/object_info")
    for node_id in OUR_NODES:
        assert node_id in info, f"{node_id} missing; ComfyUI log:\n{comfy.tail()}"
        node = info[node_id]
        assert node["category"] == "audio/MMAudio"
        assert node["python_module"].endswith(PACK_DIR_NAME)
        assert node["description"]
    assert info["MMAudioSyncSampler"]["output"] == ["MMAUDIO_SYNC_LATENT"]
    assert info["MMAudioSyncDecode"]["output"] == ["AUDIO"]
    required = info["MMAudioSyncSampler"]["input"]["required"]
    assert required["steps"][1]["default"] == 25 and required["cfg"][1]["default"] == 4.5
    loaders = {
        ("MMAudioSyncNetworkLoader", "network"): [comfy.models.network],
        ("MMAudioSyncFeatureModelsLoader", "clip"): [comfy.models.clip],
        ("MMAudioSyncFeatureModelsLoader", "synchformer"): [comfy.models.synchformer],
        ("MMAudioSyncDecoderLoader", "vae"): [comfy.models.vae],
        ("MMAudioSyncDecoderLoader", "vocoder"): [comfy.models.vocoder],
    }
    for (node_id, name), files in loaders.items():
        spec = info[node_id]["input"]["required"][name]
        options = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
        assert options == files, (node_id, name, options)


def test_video_to_audio_through_the_http_api(comfy):
    prompt_id = comfy.queue(_video_to_audio_prompt(comfy.models))
    entry = comfy.wait(prompt_id)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + "\n" + comfy.tail()
    assert "failed, using the plain network" not in comfy.log.read_text(errors="replace"), comfy.tail()  # compiled
    outputs = entry["outputs"]

    saved = outputs["save_audio"]["audio"]
    assert len(saved) == 1
    rate, channels, seconds = _audio_info(_view(comfy, saved[0]), ".flac")
    # Our AUDIO is mono [B, 1, T]; the channel layout of the file is core's choice (0.3.48 writes stereo FLAC).
    assert rate == 16000 and channels in (1, 2)
    assert 0.64 <= seconds <= CLIP_FRAMES / CLIP_FPS + 1e-3  # the clip's length at 8 and 25 fps

    previews = outputs["preview"]["audio"]
    assert len(previews) == 4, "two prompt lines x two samples"
    assert all(p["type"] == "temp" for p in previews)
    assert {_audio_info(_view(comfy, p), ".flac")[0] for p in previews} == {16000}

    # The pack's frontend payloads travel with the node outputs (and are kept in the history).
    (timing,) = outputs["enc_images"]["mmaudio_timing"]
    assert (timing["source"], timing["num_frames"], timing["fps"]) == ("video", CLIP_FRAMES, CLIP_FPS)
    assert timing["clip_frames"] > 0 and timing["segments"] == 1
    assert outputs["enc_video"]["mmaudio_timing"][0]["timestamps"] is True
    waveforms = outputs["audio_video"]["mmaudio_waveform"]
    assert [w["label"] for w in waveforms] == ["footsteps · seed 9", "footsteps · seed 10", "rain · seed 9",
                                               "rain · seed 10"]

    video = outputs["save_video"]["images"][0]
    assert outputs["save_video"].get("animated") in ([True], (True,), True)
    rate, _channels, seconds = _audio_info(_view(comfy, video), ".mp4")  # core's AAC stream layout is its own
    assert rate == 16000 and seconds > 0.5


def test_interrupt_mid_sampling_leaves_comfyui_ready(comfy):
    socket_client = WebSocket(comfy.host, comfy.port, f"/ws?clientId={comfy.client_id}")
    try:
        prompt_id = comfy.queue(_long_sampling_prompt(comfy.models, seed=1))
        sampling_progress = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and sampling_progress is None:
            message = socket_client.receive(timeout=5)
            assert comfy.process.poll() is None, comfy.tail()
            if not message:
                continue
            data = message.get("data", {})
            if message["type"] == "progress" and data.get("node") == "sample" and data.get("value", 0) >= 2:
                sampling_progress = data
            if message["type"] in ("execution_success", "execution_error"):
                pytest.fail(f"the prompt ended before it could be interrupted: {message}")
        assert sampling_progress is not None, "no sampling progress over the websocket"
        # 30 s run in windows: the bar counts windows x steps
        assert sampling_progress["max"] == 500 * plan_windows(30.0, "44k").num_windows
        comfy.post("/interrupt", {})
        interrupted = None
        while time.monotonic() < deadline and interrupted is None:
            message = socket_client.receive(timeout=5)
            if message and message["type"] == "execution_interrupted":
                interrupted = message["data"]
            elif message and message["type"] == "execution_success":
                pytest.fail("the prompt finished although it was interrupted")
        assert interrupted is not None and interrupted["node_type"] == "MMAudioSyncSampler"
        entry = comfy.wait(prompt_id)
    finally:
        socket_client.close()
    assert entry["status"]["status_str"] == "error"
    assert any(kind == "execution_interrupted" for kind, _ in entry["status"]["messages"])
    assert comfy.get("/queue")["queue_running"] == []

    after = _long_sampling_prompt(comfy.models, seed=2)
    after["enc"]["inputs"]["duration"] = 1.0
    after["sample"]["inputs"].update(steps=3, samples=1)
    entry = comfy.wait(comfy.queue(after))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    assert len(entry["outputs"]["preview"]["audio"]) == 1


def test_a_three_minute_video_gets_a_three_minute_soundtrack(comfy):
    """180 s at 12 fps through the VIDEO input: 8 s windows, each on its own span of the clip, one soundtrack."""
    _write_clip(comfy.input_dir / "three_minutes.mp4", frames=180 * 12, fps=12)
    prompt = _loaders(comfy.models) | {
        "load": {"class_type": "LoadVideo", "inputs": {"file": "three_minutes.mp4"}},
        "enc": {"class_type": "MMAudioSyncEncodeConditions",
                "inputs": {"feature_models": ["feat", 0], "video": ["load", 0], "network": ["net", 0],
                           "prompt": "waves on a beach\n[1:30] a storm", "negative_prompt": "", "duration": 0.0,
                           "mask_away_clip": False}},
        "sample": {"class_type": "MMAudioSyncSampler",
                   "inputs": {"network": ["net", 0], "conditions": ["enc", 0], "seed": 3, "steps": 2, "cfg": 4.5,
                              "samples": 1}},
        "decode": {"class_type": "MMAudioSyncDecode", "inputs": {"decoder": ["dec", 0], "latents": ["sample", 0]}},
        "save": {"class_type": "SaveAudio", "inputs": {"audio": ["decode", 0], "filename_prefix": "mmaudio_e2e/long"}},
    }
    started = time.monotonic()
    entry = comfy.wait(comfy.queue(prompt), timeout=1800)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + "\n" + comfy.tail()
    timing = entry["outputs"]["enc"]["mmaudio_timing"][0]
    assert timing["duration"] == pytest.approx(180.0, abs=0.1) and len(timing["windows"]) >= 22
    (saved,) = entry["outputs"]["save"]["audio"]
    rate, _, seconds = _audio_info(_view(comfy, saved), ".flac")
    assert rate == 16000 and seconds == pytest.approx(timing["duration"], abs=1e-3)
    print(f"three-minute video through ComfyUI: {time.monotonic() - started:.1f} s")
