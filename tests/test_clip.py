"""CLIP: config in the pack, offline tokenizer, checkpoint layouts (open_clip, Kijai), feature definitions."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.nn.functional as F

from mmaudio.errors import InvalidInputError, WrongCheckpointError
from mmaudio.features import clip as mc
from tests.parity.cases import load_manifest

TINY = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 378, "layers": 2, "width": 32, "head_width": 16, "patch_size": 126},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 24, "heads": 2, "layers": 2},
}


def tiny_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the open_clip layout of the tiny config (LayerNorm gains near 1)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, ref in mc.build_clip(TINY).state_dict().items():
        if key == "attn_mask":
            continue
        value = torch.randn(ref.shape, generator=gen) * 0.1
        if ref.ndim == 1 and key.endswith(".weight"):
            value += 1.0
        sd[key] = value
    return sd


def test_config_builds_the_manifest_model() -> None:
    manifest = load_manifest("clip_dfn5b_vit_h_14_384.json")
    assert mc.clip_config() == {k: v for k, v in manifest["constructor"].items()
                                if k in ("embed_dim", "quick_gelu", "vision_cfg", "text_cfg")}
    sd = mc.build_clip().state_dict()
    sd.pop("attn_mask", None)
    assert {k: list(v.shape) for k, v in sd.items()} == {k: e["shape"] for k, e in manifest["keys"].items()}
    assert sum(v.numel() for v in sd.values()) == manifest["param_count"]


def test_tokenizer_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the tokenizer tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mc.get_tokenizer.cache_clear()
    tokens = mc.get_tokenizer()(["a dog barks", "", "word " * 100], context_length=77)
    assert tokens.shape == (3, 77) and tokens.dtype == torch.int64
    assert tokens[:, 0].tolist() == [49406] * 3
    assert tokens[1, 1].item() == 49407 and tokens[1, 2:].abs().sum() == 0
    assert tokens[2, -1].item() == 49407  # truncated, end token kept last


def test_kijai_and_wrapped_layouts_load_to_the_same_model() -> None:
    sd = tiny_checkpoint()
    frames = torch.rand(3, 3, 384, 384, generator=torch.Generator().manual_seed(3))
    tokens = torch.randint(1, 49405, (2, 77), generator=torch.Generator().manual_seed(4))
    base = mc.load_clip(sd, config=TINY)
    want_img, want_txt = base.encode_images(frames), base.encode_tokens(tokens)

    kijai = dict(sd)
    kijai["logit_scale"] = sd["logit_scale"].reshape(1)
    wrapped = {"module." + k: v for k, v in sd.items()}
    stripped = {k: v for k, v in sd.items() if k not in ("text_projection", "logit_scale")}
    for variant in (kijai, wrapped, {"state_dict": stripped}):
        model = mc.load_clip(variant, config=TINY)
        assert model.encode_images(frames).equal(want_img)
        assert model.encode_tokens(tokens).equal(want_txt)

    half = {k: v.half() for k, v in sd.items()}
    model = mc.load_clip(half, config=TINY)  # fp16 file, float32 compute
    assert model.dtype == torch.float32
    torch.testing.assert_close(model.encode_images(frames), want_img, rtol=0, atol=5e-3)


def test_wrong_checkpoints_are_named() -> None:
    with pytest.raises(WrongCheckpointError, match="not an open_clip CLIP"):
        mc.load_clip({"vfeat_extractor.pos_embed": torch.zeros(1)}, config=TINY)
    with pytest.raises(WrongCheckpointError, match="transformers"):
        mc.load_clip({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1)}, config=TINY)
    sd = tiny_checkpoint()
    sd["visual.proj"] = torch.zeros(32, 8)
    with pytest.raises(WrongCheckpointError, match=r"visual\.proj"):
        mc.load_clip(sd, config=TINY)


def test_features_are_defined_as_mmaudio_uses_them() -> None:
    model = mc.load_clip(tiny_checkpoint(), config=TINY)
    inner = model.model
    frames = torch.rand(4, 3, 384, 384, generator=torch.Generator().manual_seed(5))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    want = F.normalize(inner.encode_image((frames - mean) / std), dim=-1)
    got = model.encode_images(frames)
    torch.testing.assert_close(got, want)
    # Many frames per forward give the same vectors as one at a time.
    torch.testing.assert_close(torch.cat([model.encode_images(f[None]) for f in frames]), got, rtol=1e-5,
                               atol=1e-6)

    text = model.encode_text(["rain on a tin roof", ""])
    assert text.shape == (2, 77, 24)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2, 77))
    # Per-token states (causal): a token's state does not depend on later tokens.
    a, b = model.tokenize(["rain on a tin roof", "rain on a tin can"])
    sa, sb = model.encode_tokens(torch.stack([a, b]))
    torch.testing.assert_close(sa[:5], sb[:5])
    assert not torch.allclose(sa[5], sb[5])
    # The pooled, projected open_clip text embedding is not what MMAudio uses.
    pooled = inner.encode_text(a[None], normalize=True)
    assert pooled.shape[-1] == TINY["embed_dim"]


def test_prompts_must_be_a_list_of_strings() -> None:
    model = mc.load_clip(tiny_checkpoint(), config=TINY)
    with pytest.raises(InvalidInputError, match="prompts"):
        model.tokenize("a single string")
    with pytest.raises(InvalidInputError, match="CLIP frames"):
        model.encode_images(torch.zeros(2, 384, 384))
