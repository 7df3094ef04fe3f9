"""Write the example workflows of ``workflows/`` (ComfyUI UI format) from the short graph descriptions below.

Widget values are laid out positionally from the node schemas, exactly as the frontend saves them: our nodes'
schemas come from the pack (loaded through the ComfyUI stand-in of ``tests/comfy_stub``), the core nodes' from
``tests/core_node_schemas.json`` (or a saved ``/object_info`` answer given with ``--object-info``). So after a
schema change, running this again keeps the files loadable; ``tests/test_workflows.py`` checks the result
independently of this script. It lives in ``tools/``, not in ``tests/`` (it writes shipped files, it tests
nothing) and not in ``workflows/`` (ComfyUI serves that folder to the browser as the pack's templates). Run from
the repository root::

    .venv/bin/python -m tools.build_workflows
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmaudio.weights.known_files import files_for_variant, known_file
from tests.pack_loader import stubbed_pack
from tests.workflow_api import input_specs, object_info_from_schema, widget_slots

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = REPO_ROOT / "workflows"
SNAPSHOT = REPO_ROOT / "tests" / "core_node_schemas.json"
FRONTEND_VERSION = "1.27.10"  # the frontend ComfyUI 0.3.64 pins
OPTIONAL_SHAPE = 7  # litegraph's "hollow circle" socket shape for optional inputs

# The original published files of the reference's default network (tests compare with the catalogue).
VARIANT = "large_44k_v2"
ORIGINAL_FILES = files_for_variant(VARIANT, prefer="original")
NETWORK, CLIP, SYNCHFORMER, VAE, VOCODER = (ORIGINAL_FILES[kind].local_path
                                            for kind in ("network", "clip", "synchformer", "vae", "vocoder"))
DOWNLOAD_NODE = "MMAudioSyncDownloadWeights"
DOWNLOAD_HINT = "<download hint>"  # replaced by build(): the download node's name and layout, if the pack has it
WAN_REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
WAN_FILES = {
    "wan2.1_t2v_1.3B_fp16.safetensors": "diffusion_models",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "text_encoders",
    "wan_2.1_vae.safetensors": "vae",
}
SEED = 42  # the reference demo's seed


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    values: dict[str, Any] = field(default_factory=dict)  # widget values by input name ("<name>:control" too)
    title: str | None = None
    width: float = 320
    extra_height: float = 0
    color: tuple[str, str] | None = None


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    links: list[tuple[int, int | str, int, str]]  # (from node, output index or name, to node, input name)


def _note(text: str, pos: tuple[float, float] = (-500, 0), width: float = 460, height: float = 600) -> Node:
    return Node(1, "MarkdownNote", pos, {"text": text.strip()}, title="About this workflow", width=width,
                extra_height=height, color=("#432", "#653"))


def _loaders(first_id: int, x: float, y: float) -> list[Node]:
    return [
        Node(first_id, "MMAudioSyncNetworkLoader", (x, y), {"network": NETWORK, "precision": "auto"}, width=360),
        Node(first_id + 1, "MMAudioSyncFeatureModelsLoader", (x, y + 170),
             {"clip": CLIP, "synchformer": SYNCHFORMER, "precision": "auto"}, width=360),
        Node(first_id + 2, "MMAudioSyncDecoderLoader", (x, y + 370),
             {"vae": VAE, "vocoder": VOCODER, "precision": "auto"}, width=360),
    ]


def _generation(first_id: int, x: float, y: float, encode: dict[str, Any]) -> list[Node]:
    """Encode conditions, sampler (reference settings) and decode, ids first_id .. first_id + 2."""
    defaults = {"prompt": "", "negative_prompt": "", "duration": 0.0, "mask_away_clip": False, "fps": 0.0}
    return [
        Node(first_id, "MMAudioSyncEncodeConditions", (x, y), defaults | encode, width=360, extra_height=40),
        Node(first_id + 1, "MMAudioSyncSampler", (x + 400, y),
             {"seed": SEED, "seed:control": "fixed", "steps": 25, "cfg": 4.5, "samples": 1}),
        Node(first_id + 2, "MMAudioSyncDecode", (x + 400, y + 340)),
    ]


_ROLES = {"network": "network", "vae": "VAE", "vocoder": "vocoder", "synchformer": "Synchformer", "clip": "CLIP"}
FILES_NOTE = f"""
Model files (the original releases of {VARIANT}), in `ComfyUI/models/mmaudio/`:
""" + "".join(f"- {role} `{ORIGINAL_FILES[kind].local_path}` ({ORIGINAL_FILES[kind].repo_id})\n"
              for kind, role in _ROLES.items()) + f"""
{DOWNLOAD_HINT}Kijai's fp16 safetensors work as well: pick them in the loaders, which list the files of their kind
whatever their names.
"""

SAMPLER_NOTE = """
Sampler settings are the reference's: 25 Euler steps, cfg 4.5, seed 42 (fixed, so changing a later node does not
regenerate the sound). Raise *samples* for several variations at once.
"""

VIDEO_TO_AUDIO = Graph(
    "video_to_audio",
    [
        _note(f"""
## MMAudio: video to audio

Adds sound to a (silent) video. The VIDEO of **Load Video** goes straight into the *video* input of
*MMAudio Encode Conditions*, which reads the file with its own timestamps, a chunk of frames at a time: frames
are picked by time at 8 fps (CLIP) and 25 fps (Synchformer), so any frame rate (a variable one too) stays in
sync, and a long or 4K clip is never held in memory whole. *duration* 0 = the clip's length.

Optional: a *prompt* (what should be heard) and a *negative prompt* (e.g. `music`).

*MMAudio Put Audio on Video* copies the original picture unchanged and adds the new sound; **Save Video** saves
it, **Preview Audio** plays the sound alone.
{SAMPLER_NOTE}{FILES_NOTE}"""),
        Node(2, "LoadVideo", (0, 0), {"file": "input_video.mp4"}, width=300, extra_height=240),
        *_loaders(4, 340, 0),
        *_generation(7, 740, 0, {}),
        Node(10, "MMAudioSyncMuxVideo", (1540, 0),
             {"container": "auto", "audio_codec": "auto", "save_output": False, "filename_prefix": "MMAudio/video",
              "fps": 24.0}, width=340),
        Node(11, "SaveVideo", (1920, 0), {"filename_prefix": "video/MMAudio", "format": "auto", "codec": "auto"},
             width=400, extra_height=300),
        Node(12, "PreviewAudio", (1540, 300), width=340, extra_height=60),
    ],
    [
        (2, "VIDEO", 7, "video"),
        (5, 0, 7, "feature_models"),
        (4, 0, 8, "network"),
        (7, "conditions", 8, "conditions"),
        (6, 0, 9, "decoder"),
        (8, 0, 9, "latents"),
        (9, "audio", 10, "audio"),
        (2, "VIDEO", 10, "video"),
        (10, "video", 11, "video"),
        (9, "audio", 12, "audio"),
    ],
)

TEXT_TO_AUDIO = Graph(
    "text_to_audio",
    [
        _note(f"""
## MMAudio: text to audio

Sound from a prompt alone: nothing is connected to the *images*/*video* inputs of *MMAudio Encode Conditions*,
so the model's learned "no video" features stand in. Set *duration* (seconds; 8 s is what the models were
trained on). One prompt per line gives one generation per line.

The feature-models loader is still needed: its CLIP encodes the prompt.
{SAMPLER_NOTE}{FILES_NOTE}"""),
        *_loaders(2, 0, 0),
        *_generation(5, 400, 0, {"prompt": "rain falling on a tin roof, distant thunder", "duration": 8.0}),
        Node(8, "SaveAudio", (1200, 0), {"filename_prefix": "audio/MMAudio"}, width=340, extra_height=60),
    ],
    [
        (3, 0, 5, "feature_models"),
        (2, 0, 6, "network"),
        (5, "conditions", 6, "conditions"),
        (4, 0, 7, "decoder"),
        (6, 0, 7, "latents"),
        (7, "audio", 8, "audio"),
    ],
)

IMAGE_TO_AUDIO = Graph(
    "image_to_audio",
    [
        _note(f"""
## MMAudio: image to audio

Sound for a still picture: the single image from **Load Image** gives what is seen (CLIP), with no motion to
follow. Set *duration* (seconds; a still image has no length of its own). A *prompt* helps to say which sound
you expect.
{SAMPLER_NOTE}{FILES_NOTE}"""),
        Node(2, "LoadImage", (0, 0), {"image": "example.png"}, width=300, extra_height=240),
        *_loaders(3, 340, 0),
        *_generation(6, 740, 0, {"duration": 8.0}),
        Node(9, "SaveAudio", (1540, 0), {"filename_prefix": "audio/MMAudio"}, width=340, extra_height=60),
    ],
    [
        (2, "IMAGE", 6, "images"),
        (4, 0, 6, "feature_models"),
        (3, 0, 7, "network"),
        (6, "conditions", 7, "conditions"),
        (5, 0, 8, "decoder"),
        (7, 0, 8, "latents"),
        (8, "audio", 9, "audio"),
    ],
)

WAN_PROMPT = ("a steam locomotive puffing along a mountain railway, white smoke billowing, wheels turning on the "
              "tracks, daytime, tracking shot")
WAN_TEXT_TO_VIDEO_TO_AUDIO = Graph(
    "wan_text_to_video_to_audio",
    [
        _note(f"""
## Wan 2.1 text to video, then MMAudio sound

The left half is ComfyUI's own Wan 2.1 text-to-video (1.3B): 81 frames at 16 fps (about 5 s). The frames go
straight into *MMAudio Encode Conditions* with *fps* = 16, Wan's frame rate, so the sound follows the picture;
**Create Video** joins frames and sound at the same 16 fps and **Save Video** writes the mp4.

The KSampler's seed is fixed: change the MMAudio prompt or seed and only the sound is made again.

Wan files (Comfy-Org/Wan_2.1_ComfyUI_repackaged): `wan2.1_t2v_1.3B_fp16.safetensors` (diffusion_models),
`umt5_xxl_fp8_e4m3fn_scaled.safetensors` (text_encoders), `wan_2.1_vae.safetensors` (vae).
{SAMPLER_NOTE}{FILES_NOTE}""", height=760),
        Node(2, "UNETLoader", (0, 0), {"unet_name": "wan2.1_t2v_1.3B_fp16.safetensors", "weight_dtype": "default"},
             width=360),
        Node(3, "CLIPLoader", (0, 170),
             {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}, width=360),
        Node(4, "VAELoader", (0, 370), {"vae_name": "wan_2.1_vae.safetensors"}, width=360),
        Node(5, "CLIPTextEncode", (400, 0), {"text": WAN_PROMPT}, title="Wan prompt (positive)", width=400,
             extra_height=80, color=("#232", "#353")),
        Node(6, "CLIPTextEncode", (400, 230), {"text": "static, blurry, low quality, distorted, watermark, text"},
             title="Wan prompt (negative)", width=400, extra_height=40, color=("#322", "#533")),
        Node(7, "EmptyHunyuanLatentVideo", (400, 420), {"width": 832, "height": 480, "length": 81, "batch_size": 1},
             title="Video size (81 frames = 5 s at 16 fps)"),
        Node(8, "ModelSamplingSD3", (840, 0), {"shift": 8.0}),
        Node(9, "KSampler", (840, 120),
             {"seed": SEED, "seed:control": "fixed", "steps": 30, "cfg": 6.0, "sampler_name": "uni_pc",
              "scheduler": "simple", "denoise": 1.0}),
        Node(10, "VAEDecode", (1200, 0), width=220),
        *_loaders(11, 840, 500),
        *_generation(14, 1240, 220, {"prompt": "steam train chugging, whistle blowing, wheels clattering on rails",
                                     "fps": 16.0}),
        Node(17, "CreateVideo", (2040, 0), {"fps": 16.0}, width=280),
        Node(18, "SaveVideo", (2360, 0), {"filename_prefix": "video/Wan_MMAudio", "format": "auto", "codec": "auto"},
             width=400, extra_height=300),
    ],
    [
        (2, 0, 8, "model"),
        (3, 0, 5, "clip"),
        (3, 0, 6, "clip"),
        (8, 0, 9, "model"),
        (5, 0, 9, "positive"),
        (6, 0, 9, "negative"),
        (7, 0, 9, "latent_image"),
        (9, 0, 10, "samples"),
        (4, 0, 10, "vae"),
        (12, 0, 14, "feature_models"),
        (10, 0, 14, "images"),
        (11, 0, 15, "network"),
        (14, "conditions", 15, "conditions"),
        (13, 0, 16, "decoder"),
        (15, 0, 16, "latents"),
        (10, 0, 17, "images"),
        (16, "audio", 17, "audio"),
        (17, 0, 18, "video"),
    ],
)

REGENERATE_ONE_SECOND = Graph(
    "regenerate_one_second",
    [
        _note(f"""
## MMAudio: regenerate one second of a soundtrack

The video already has sound, and one second of it is wrong. **Get Video Components** hands its audio to
*MMAudio Encode Audio*, which turns it into latents with the decoder's VAE. *MMAudio Regenerate Range* marks
2 s to 3 s to be generated again; everything else is kept exactly (its sound is the input's own decoding,
bit for bit), and the new second is generated to join it, with 0.1 s soft edges, in sync with the picture.

- Set *end* to 0 to regenerate to the end: with a video longer than its soundtrack, that extends it.
- Without *Regenerate Range*, lower the sampler's *denoise* for audio-to-audio over the whole clip (1: new
  audio, 0: the input unchanged).
{SAMPLER_NOTE}{FILES_NOTE}"""),
        Node(2, "LoadVideo", (0, 0), {"file": "input_video.mp4"}, width=300, extra_height=240),
        Node(3, "GetVideoComponents", (0, 420), width=300),
        *_loaders(4, 340, 0),
        *_generation(7, 740, 0, {}),
        Node(10, "MMAudioSyncEncodeAudio", (740, 420), width=360),
        Node(11, "MMAudioSyncRegenerateRange", (740, 560), {"start": 2.0, "end": 3.0, "fade": 0.1}, width=360),
        Node(12, "MMAudioSyncMuxVideo", (1540, 0),
             {"container": "auto", "audio_codec": "auto", "save_output": False, "filename_prefix": "MMAudio/video",
              "fps": 24.0}, width=340),
        Node(13, "SaveVideo", (1920, 0), {"filename_prefix": "video/MMAudio", "format": "auto", "codec": "auto"},
             width=400, extra_height=300),
        Node(14, "PreviewAudio", (1540, 300), width=340, extra_height=60),
    ],
    [
        (2, "VIDEO", 7, "video"),
        (2, "VIDEO", 3, "video"),
        (5, 0, 7, "feature_models"),
        (4, 0, 7, "network"),
        (4, 0, 8, "network"),
        (7, "conditions", 8, "conditions"),
        (6, 0, 10, "decoder"),
        (3, "audio", 10, "audio"),
        (10, "latents", 11, "latents"),
        (11, "latents", 8, "latents"),
        (6, 0, 9, "decoder"),
        (8, 0, 9, "latents"),
        (9, "audio", 12, "audio"),
        (2, "VIDEO", 12, "video"),
        (12, "video", 13, "video"),
        (9, "audio", 14, "audio"),
    ],
)

GRAPHS = (VIDEO_TO_AUDIO, TEXT_TO_AUDIO, IMAGE_TO_AUDIO, WAN_TEXT_TO_VIDEO_TO_AUDIO, REGENERATE_ONE_SECOND)


# ---- building -----------------------------------------------------------------------------------------------------
def pack_schemas() -> dict[str, dict[str, Any]]:
    """``/object_info`` entries of the pack's nodes, from their V3 schemas (no model files on disk)."""
    with tempfile.TemporaryDirectory() as models, stubbed_pack(Path(models)) as pack:
        extension = asyncio.run(pack.comfy_entrypoint())
        nodes = asyncio.run(extension.get_node_list())
        return {cls.GET_SCHEMA().node_id: object_info_from_schema(cls.GET_SCHEMA()) for cls in nodes}


def pack_identity() -> tuple[str, str]:
    """(name, version) of [project] in pyproject.toml (read without tomllib, which Python 3.10 lacks)."""
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    fields = dict(re.findall(r'^(name|version)\s*=\s*"([^"]+)"', project, re.MULTILINE))
    return fields["name"], fields["version"]


def _model_entries(node: Node) -> list[dict[str, str]]:
    """``properties.models``: lets the frontend name (and offer to download) a missing model file."""
    if node.type.startswith("MMAudioSync") and node.type.endswith("Loader"):
        names = [v for k, v in node.values.items() if k != "precision"]
        return [{"name": n, "url": known_file(n).url, "directory": "mmaudio"} for n in names]
    return [{"name": v, "url": f"{WAN_REPACKAGED}/{WAN_FILES[v]}/{v}", "directory": WAN_FILES[v]}
            for v in node.values.values() if v in WAN_FILES]


def _download_hint(schemas: Mapping[str, Mapping[str, Any]]) -> str:
    """A sentence naming the pack's download node and its layout for the original files ("" without the node)."""
    info = schemas.get(DOWNLOAD_NODE)
    if info is None:
        return ""
    (layout,) = [s for s in input_specs(info) if s.name == "layout"]
    (original,) = [c for c in layout.choices or () if "original" in c]
    return (f"No files yet? Add the *{info['display_name']}* node, set layout `{original}`, queue it, then refresh "
            "the page (R). ")


def _topological_order(graph: Graph) -> dict[int, int]:
    incoming = {n.id: {src for src, _, dst, _ in graph.links if dst == n.id} for n in graph.nodes}
    order: dict[int, int] = {}
    while len(order) < len(graph.nodes):
        ready = sorted(i for i, deps in incoming.items() if i not in order and deps <= set(order))
        if not ready:
            raise ValueError(f"{graph.name}: the links form a cycle")
        for node_id in ready:
            order[node_id] = len(order)
    return order


def build(graph: Graph, schemas: Mapping[str, Mapping[str, Any]], pack: tuple[str, str],
          core_version: str) -> dict[str, Any]:
    by_id = {n.id: n for n in graph.nodes}
    order = _topological_order(graph)
    ui_nodes: dict[int, dict[str, Any]] = {}
    hint = _download_hint(schemas)
    for node in graph.nodes:
        if node.type == "MarkdownNote":
            node.values["text"] = node.values["text"].replace(DOWNLOAD_HINT, hint)
        ui_nodes[node.id] = _ui_node(node, schemas, pack, core_version, order[node.id])
    ui_links = []
    for link_id, (src, output, dst, input_name) in enumerate(graph.links, start=1):
        source, target = ui_nodes[src], ui_nodes[dst]
        names = [o["name"] for o in source["outputs"]]
        slot = output if isinstance(output, int) else names.index(output)
        link_type = source["outputs"][slot]["type"]
        socket_names = [s["name"] for s in target["inputs"]]
        if input_name not in socket_names:  # a widget input fed by a link gets its socket appended
            spec = next(s for s in input_specs(schemas[by_id[dst].type]) if s.name == input_name)
            socket = {"name": input_name, "type": spec.type, "widget": {"name": input_name}, "link": None}
            if spec.section == "optional":
                socket["shape"] = OPTIONAL_SHAPE
            target["inputs"].append(socket)
            socket_names.append(input_name)
        target_slot = socket_names.index(input_name)
        target["inputs"][target_slot]["link"] = link_id
        source["outputs"][slot]["links"].append(link_id)
        ui_links.append([link_id, src, slot, dst, target_slot, link_type])
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{pack[0]}/workflows/{graph.name}")),
        "revision": 0,
        "last_node_id": max(by_id),
        "last_link_id": len(ui_links),
        "nodes": [ui_nodes[n.id] for n in graph.nodes],
        "links": ui_links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [520, 120]}, "frontendVersion": FRONTEND_VERSION},
        "version": 0.4,
    }


def _ui_node(node: Node, schemas: Mapping[str, Mapping[str, Any]], pack: tuple[str, str], core_version: str,
             order: int) -> dict[str, Any]:
    base: dict[str, Any] = {"id": node.id, "type": node.type, "pos": list(node.pos)}
    if node.type == "MarkdownNote":
        return base | {"size": [node.width, node.extra_height], "flags": {}, "order": order, "mode": 0,
                       "inputs": [], "outputs": [], "title": node.title, "properties": {},
                       "widgets_values": [node.values["text"]], "color": node.color[0], "bgcolor": node.color[1]}
    info = schemas[node.type]
    specs = input_specs(info)
    sockets = []
    for spec in specs:
        if not spec.is_widget:
            socket = {"name": spec.name, "type": spec.type, "link": None}
            if spec.section == "optional":
                socket["shape"] = OPTIONAL_SHAPE
            sockets.append(socket)
    outputs = [{"name": name, "type": kind, "slot_index": i, "links": []}
               for i, (name, kind) in enumerate(zip(info["output_name"], info["output"], strict=True))]
    values = []
    for slot in widget_slots(info):
        if slot.role == "control":
            values.append(node.values.get(f"{slot.name}:control", "fixed"))
        elif slot.role == "upload":
            values.append("image")  # the upload button's value, as the frontend saves it
        elif slot.name in node.values:
            values.append(node.values[slot.name])
        elif "default" in slot.spec.options:
            values.append(slot.spec.options["default"])
        else:
            raise ValueError(f"{node.type}.{slot.name}: give a value (the schema has no default)")
    unknown = {k.split(":")[0] for k in node.values} - {s.name for s in specs}
    if unknown:
        raise ValueError(f"{node.type}: no inputs named {sorted(unknown)}")
    ours = node.type.startswith("MMAudioSync")
    properties: dict[str, Any] = {"Node name for S&R": node.type, "cnr_id": pack[0] if ours else "comfy-core",
                                  "ver": pack[1] if ours else core_version}
    models = _model_entries(node)
    if models:
        properties["models"] = models
    rows = max(len(sockets), len(outputs))
    height = 30 + 22 * rows + 26 * len(values) + node.extra_height
    ui = base | {"size": [node.width, height], "flags": {}, "order": order, "mode": 0, "inputs": sockets,
                 "outputs": outputs}
    if node.title:
        ui["title"] = node.title
    ui |= {"properties": properties, "widgets_values": values}
    if node.color:
        ui |= {"color": node.color[0], "bgcolor": node.color[1]}
    return ui


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object-info", type=Path, help="a saved GET /object_info answer for the core nodes "
                        "(default: tests/core_node_schemas.json)")
    parser.add_argument("--output", type=Path, default=WORKFLOWS_DIR)
    args = parser.parse_args(argv)
    if args.object_info:
        core = json.loads(args.object_info.read_text(encoding="utf-8"))
        core_version = "0.3.64"
    else:
        snapshot = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
        core, core_version = snapshot["nodes"], snapshot["comfyui_version"]
    schemas = {**core, **pack_schemas()}
    pack = pack_identity()
    args.output.mkdir(parents=True, exist_ok=True)
    for graph in GRAPHS:
        path = args.output / f"{graph.name}.json"
        path.write_text(json.dumps(build(graph, schemas, pack, core_version), indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
