"""CLIP's architecture is read off the checkpoint: the published model gets the shipped config, other sizes
(fine-tunes, small test models) get one that fits their shapes."""

from __future__ import annotations

import open_clip
import torch

from mmaudio.features.clip import build_clip, clip_config, clip_config_for, load_clip

SMALL = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 378, "layers": 2, "width": 64, "head_width": 64, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 3},
}


def test_published_shapes_use_the_shipped_config() -> None:
    meta = {k: torch.empty(v.shape, device="meta") for k, v in build_clip().state_dict().items()}
    assert clip_config_for(meta) == clip_config()


def test_small_clip_loads_and_encodes_384_px_frames_and_text() -> None:
    torch.manual_seed(0)
    small = open_clip.model.CLIP(**SMALL).eval()
    config = clip_config_for(small.state_dict())
    assert config["vision_cfg"]["layers"] == 2 and config["text_cfg"]["layers"] == 3
    assert config["vision_cfg"]["width"] == 64 and config["embed_dim"] == 32
    encoder = load_clip(small.state_dict())
    with torch.no_grad():
        text = encoder.encode_text(["rain on a tin roof", ""])
        images = encoder.encode_images(torch.rand(3, 3, 384, 384))
    assert text.shape == (2, 77, 64)
    assert images.shape == (3, 32)
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(3))
    # the same weights in open_clip itself give the same image embedding
    x = torch.rand(1, 3, 378, 378)
    with torch.no_grad():
        ours = encoder.model.encode_image(x, normalize=True)
        theirs = small.encode_image(x, normalize=True)
    torch.testing.assert_close(ours, theirs)
