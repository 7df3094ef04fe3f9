"""ComfyUI node that puts generated AUDIO on a video: a core VIDEO (stream copy) or IMAGE frames with a rate.

The output is a core VIDEO backed by the written file, so Save Video and other VIDEO consumers work, and the node
previews (or saves) the result itself. All media work is in the library's ``media`` module; this file only
translates ComfyUI inputs, chooses file names and builds the UI record.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

import folder_paths
from comfy_api.latest import InputImpl, io, ui

from ..mmaudio.errors import InvalidInputError
from ..mmaudio.media import container_for_source, mux_audio_into_video, probe_video
from .progress import NodeProgress
from .video_files import unedited_file_of

CATEGORY = "audio/MMAudio"
CONTAINER_CHOICES = ["auto", "mp4", "mkv", "webm"]
AUDIO_CODEC_CHOICES = ["auto", "aac", "flac", "opus"]


def _audio_parts(audio: Any) -> tuple[Any, Any]:
    """Waveform and sample rate of an AUDIO (a dict, or a lazy mapping such as VideoHelperSuite's)."""
    if audio is None:
        raise InvalidInputError("audio is empty (None); connect the decoded MMAudio AUDIO")
    try:
        return audio["waveform"], audio["sample_rate"]
    except (KeyError, TypeError) as exc:
        raise InvalidInputError(f"audio must be a ComfyUI AUDIO with 'waveform' and 'sample_rate' ({exc!r})") from exc


def _copyable_source(video: Any) -> Any:
    """The file behind a VIDEO whose packets can be copied unchanged, or None when it must be decoded.

    Only a core ``VideoFromFile`` is backed by a file, and only an unedited one can be copied.
    """
    file_type = getattr(InputImpl, "VideoFromFile", None)
    if file_type is None or not isinstance(video, file_type):
        return None
    return unedited_file_of(video)


def _metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, str]:
    """The workflow tags core SaveVideo writes, unless ComfyUI runs with --disable-metadata."""
    try:
        from comfy.cli_args import args

        if args.disable_metadata:
            return {}
    except ImportError:
        pass
    tags = {key: json.dumps(value) for key, value in (extra_pnginfo or {}).items()}
    if prompt is not None:
        tags["prompt"] = json.dumps(prompt)
    return tags


class MuxVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncMuxVideo",
            display_name="MMAudio Put Audio on Video",
            category=CATEGORY,
            description=(
                "Puts generated audio on a video. A connected VIDEO keeps its picture bit for bit (its video "
                "stream is copied, not re-encoded) and its own audio is replaced; IMAGE frames are encoded at "
                "the given fps (H.264, or VP9 for webm). The audio is trimmed, or padded with silence, to the "
                "video's exact length. Shows a preview, optionally saves to the output folder, and outputs a "
                "VIDEO for Save Video or other video nodes."
            ),
            inputs=[
                io.Audio.Input(
                    "audio",
                    tooltip="The sound to put on the video, e.g. from the MMAudio decoder. Mono or stereo. "
                    "A batch of several samples gives one video per sample.",
                ),
                io.Video.Input(
                    "video",
                    optional=True,
                    tooltip="The video whose picture is kept (e.g. from Load Video). Its video stream is copied "
                    "without re-encoding. Connect this or images, not both.",
                ),
                io.Image.Input(
                    "images",
                    optional=True,
                    tooltip="Frames to encode when no video is connected (e.g. from Get Video Components or "
                    "VideoHelperSuite's Load Video).",
                ),
                io.Float.Input(
                    "fps",
                    default=24.0,
                    min=0.01,
                    max=1000.0,
                    step=0.001,
                    optional=True,
                    tooltip="Frame rate of the images input: use the rate the frames were loaded at (Get Video "
                    "Components' fps, VideoHelperSuite's loaded_fps). Ignored when a video is connected.",
                ),
                io.Combo.Input(
                    "container",
                    options=CONTAINER_CHOICES,
                    default="auto",
                    tooltip="File type. auto: mp4, or mkv when the connected video's codec cannot go into mp4 "
                    "without re-encoding. webm needs VP8/VP9/AV1 video (always true for images).",
                ),
                io.Combo.Input(
                    "audio_codec",
                    options=AUDIO_CODEC_CHOICES,
                    default="auto",
                    tooltip="Audio codec. auto: AAC in mp4, FLAC (lossless) in mkv, Opus in webm. webm holds "
                    "Opus only. Opus audio is resampled to 48 kHz when needed.",
                ),
                io.Boolean.Input(
                    "save_output",
                    default=True,
                    tooltip="On: save into ComfyUI's output folder. Off: write to the temp folder for the preview "
                    "only (cleared when ComfyUI restarts). With a batch, every sample's video is written.",
                ),
                io.String.Input(
                    "filename_prefix",
                    default="MMAudio/video",
                    tooltip="Name of the saved file(s), relative to the output folder; may contain a subfolder "
                    "and %date:...%-style variables like core Save Video.",
                ),
            ],
            outputs=[
                io.Video.Output(
                    display_name="video",
                    tooltip="The video with the new audio. With a batch of audio samples this is the first "
                    "sample's video; all samples are written and previewed.",
                ),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls,
        audio: Any,
        container: str = "auto",
        audio_codec: str = "auto",
        save_output: bool = True,
        filename_prefix: str = "MMAudio/video",
        video: Any = None,
        images: Any = None,
        fps: float = 24.0,
    ) -> io.NodeOutput:
        waveform, sample_rate = _audio_parts(audio)
        if video is not None and images is not None:
            raise InvalidInputError("connect either a video or images to put the audio on, not both")
        if video is None and images is None:
            raise InvalidInputError("connect a video, or images with their fps, to put the audio on")

        source = _copyable_source(video) if video is not None else None
        if source is not None:
            info = probe_video(source)
            width, height = info.width, info.height
            chosen = container_for_source(source) if container == "auto" else container
            picture, frame_rate = source, None
        else:
            if video is not None:  # a VIDEO that is not a plain file: take its decoded frames and exact rate
                components = video.get_components()
                picture, frame_rate = components.images, components.frame_rate
            else:
                picture, frame_rate = images, fps
            shape = tuple(getattr(picture, "shape", ()))
            height, width = (int(shape[1]), int(shape[2])) if len(shape) == 4 else (0, 0)  # else the library says why
            chosen = "mp4" if container == "auto" else container

        if save_output:
            base, folder_type, prefix = folder_paths.get_output_directory(), io.FolderType.output, filename_prefix
        else:  # a preview: temp folder, random tag so concurrent previews never share a name (as core PreviewImage)
            tag = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
            base, folder_type = folder_paths.get_temp_directory(), io.FolderType.temp
            prefix = f"{filename_prefix}_temp_{tag}"
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, base, width, height)
        count = _batch_size(waveform)
        paths = [Path(folder) / f"{name}_{counter + i:05}_.{chosen}" for i in range(count)]

        bar = NodeProgress(1000)
        mux_audio_into_video(
            picture,
            waveform,
            sample_rate,
            paths,
            fps=frame_rate,
            container=chosen,
            audio_codec=audio_codec,
            metadata=_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo),
            progress=bar.stage(1000),  # also honours Cancel: an interrupt aborts and removes partial files
        )
        preview = ui.PreviewVideo([ui.SavedResult(p.name, subfolder, folder_type) for p in paths])
        return io.NodeOutput(InputImpl.VideoFromFile(str(paths[0])), ui=preview)


def _batch_size(waveform: Any) -> int:
    """How many videos a waveform makes: its batch size for [B, C, T], one for [C, T]."""
    shape = getattr(waveform, "shape", None)
    if shape is None or len(shape) not in (2, 3):
        raise InvalidInputError(f"audio waveform must have shape [batch, channels, samples], got {shape}")
    return int(shape[0]) if len(shape) == 3 else 1


MUX_NODES: list[type[io.ComfyNode]] = [MuxVideo]
