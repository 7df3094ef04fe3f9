"""Synchformer visual encoder: checkpoint layout, loader, attention pieces against plain statements, segmenting."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmaudio.errors import InvalidInputError, WrongCheckpointError
from mmaudio.features import synchformer as sf
from mmaudio.ops import default_ops
from tests.parity.cases import load_manifest


def meta_checkpoint(with_audio_branch: bool = True) -> dict[str, torch.Tensor]:
    """A published-layout state dict on the meta device (no memory): visual keys plus the unused audio branch."""
    with torch.device("meta"):
        model = sf.SynchformerVisual()
    sd = {sf.PREFIX + k: v for k, v in model.state_dict().items()}
    if with_audio_branch:
        sd["afeat_extractor.patch_embed.proj.weight"] = torch.empty(768, 1, 16, 16, device="meta")
        sd["transformer.offset_head.weight"] = torch.empty(21, 768, device="meta")
    return sd


def test_keys_shapes_and_size_match_the_manifest() -> None:
    manifest = load_manifest("synchformer.json")
    sd = meta_checkpoint(with_audio_branch=False)
    assert {k: list(v.shape) for k, v in sd.items()} == {k: e["shape"] for k, e in manifest["keys"].items()}
    assert sum(v.numel() for v in sd.values()) == manifest["param_count"]


@pytest.mark.parametrize("prefix", ["", "module."])
def test_loader_keeps_only_the_visual_branch(prefix: str) -> None:
    sd = {prefix + k: v for k, v in meta_checkpoint().items()}
    model = sf.load_synchformer(sd, device="meta")
    assert isinstance(model, sf.SynchformerVisual) and not model.training


def test_loader_casts_storage_dtype() -> None:
    sd = {k: v for k, v in meta_checkpoint(with_audio_branch=False).items()}
    model = sf.load_synchformer(sd, device="meta", dtype=torch.float16)
    assert model.pos_embed.dtype == torch.float16 and model.blocks[0].attn.qkv.weight.dtype == torch.float16


def test_loader_rejects_other_checkpoints() -> None:
    with pytest.raises(WrongCheckpointError, match="not a Synchformer"):
        sf.load_synchformer({"visual.conv1.weight": torch.empty(1, device="meta")}, device="meta")
    sd = meta_checkpoint()
    del sd[sf.PREFIX + "blocks.3.mlp.fc1.bias"]
    with pytest.raises(WrongCheckpointError, match="missing"):
        sf.load_synchformer(sd, device="meta")
    sd = meta_checkpoint()
    sd[sf.PREFIX + "pos_embed"] = torch.empty(1, 50, 768, device="meta")
    with pytest.raises(WrongCheckpointError, match="shape"):
        sf.load_synchformer(sd, device="meta")


def naive_divided_attention(attn: sf.DividedAttention, x: torch.Tensor, mode: str, steps: int, patches: int):  # type: ignore[no-untyped-def]
    """Token by token: a patch attends to CLS + its time line (time) or CLS + its frame (space); CLS to all."""
    b, n, d = x.shape
    h = attn.heads
    hd = d // h
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    out = torch.zeros(b, n, d)
    for bi in range(b):
        for head in range(h):
            sl = slice(head * hd, (head + 1) * hd)
            for tok in range(n):
                if tok == 0:
                    keys = list(range(n))
                else:
                    t, p = divmod(tok - 1, patches)
                    group = [1 + tt * patches + p for tt in range(steps)] if mode == "time" else \
                        [1 + t * patches + pp for pp in range(patches)]
                    keys = [0, *group]
                w = torch.softmax((q[bi, tok, sl] * hd**-0.5) @ k[bi, keys, sl].T, dim=-1)
                out[bi, tok, sl] = w @ v[bi, keys, sl]
    return attn.proj(out)


@pytest.mark.parametrize("mode", ["time", "space"])
def test_divided_attention_matches_token_by_token_statement(mode: str) -> None:
    torch.manual_seed(0)
    attn = sf.DividedAttention(dim=8, heads=2, ops=default_ops())
    steps, patches = 3, 4
    x = torch.randn(2, 1 + steps * patches, 8)
    with torch.no_grad():
        got = attn(x, mode, steps, patches)
        want = naive_divided_attention(attn, x, mode, steps, patches)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _TinyConfig() -> sf.MotionFormerConfig:  # noqa: N802 - stands for the class it used to be
    return sf.MotionFormerConfig(dim=16)  # 16 / 64 rounds to one head


def test_frame_pool_equals_torch_pre_norm_encoder_layer_cls_output() -> None:
    torch.manual_seed(0)
    cfg = _TinyConfig()
    pool = sf.FrameAttentionPool(cfg, default_ops())
    with torch.no_grad():
        for p in pool.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, dim_feedforward=cfg.dim * cfg.mlp_ratio, dropout=0.0,
                                       activation=F.gelu, layer_norm_eps=cfg.eps, batch_first=True, norm_first=True)
    state = {k: v for k, v in pool.state_dict().items() if k != "cls_token"}
    layer.load_state_dict(state, strict=True)
    layer.eval()
    x = torch.randn(5, 7, cfg.dim)
    with torch.no_grad():
        want = layer(torch.cat([pool.cls_token.expand(5, -1, -1), x], dim=1))[:, 0]
        got = pool(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class _StubSynchformer(nn.Module):
    """Returns, for every segment, 8 vectors holding the mean of each 2-frame tubelet (shape-compatible)."""

    cfg = sf.MotionFormerConfig()

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1))
        self.batches: list[int] = []

    def forward(self, seg: torch.Tensor) -> torch.Tensor:
        self.batches.append(seg.shape[0])
        tube = seg.view(seg.shape[0], 8, -1).mean(-1)
        return tube.unsqueeze(-1).expand(-1, -1, 768)


@pytest.mark.parametrize("frames", [16, 23, 24, 50, 62])
def test_segments_of_16_every_8_batched_across_segments(frames: int) -> None:
    x = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1, 1).expand(2, frames, 3, 4, 4)
    x = x + torch.tensor([0.0, 1000.0]).view(2, 1, 1, 1, 1)
    s = sf.num_segments(frames)
    stub = _StubSynchformer()
    out = sf.encode_sync_frames(stub, x, batch=3)  # type: ignore[arg-type]
    assert out.shape == (2, s * 8, 768)
    for b in range(2):
        for seg in range(s):
            for t in range(8):
                first = seg * 8 + 2 * t
                assert out[b, seg * 8 + t, 0].item() == pytest.approx(first + 0.5 + 1000.0 * b)
    assert max(stub.batches) <= 3 and sum(stub.batches) == 2 * s
    one_by_one = sf.encode_sync_frames(stub, x, batch=1)  # type: ignore[arg-type]
    assert one_by_one.equal(out)


def test_too_few_frames_for_a_segment() -> None:
    with pytest.raises(InvalidInputError, match="at least 16"):
        sf.encode_sync_frames(_StubSynchformer(), torch.zeros(1, 15, 3, 224, 224))  # type: ignore[arg-type]


def test_wrong_segment_shape_is_named() -> None:
    with torch.device("meta"):
        model = sf.SynchformerVisual()
    with pytest.raises(InvalidInputError, match="segments"):
        model(torch.zeros(1, 16, 3, 112, 112, device="meta"))


class _StubSyncModel(_StubSynchformer):
    dtype = torch.float32

    def memory_for_segments(self, batch: int, dtype: torch.dtype | None = None) -> int:
        return 0


class _RecordingRuntime:
    """A CPU runtime that notes the units planned and every progress report, per stage."""

    def __init__(self) -> None:
        self.units: dict[str, int] = {}
        self.reports: dict[str, list[tuple[int, int]]] = {}

    @contextlib.contextmanager
    def stage(self, name, models, memory_required=0):  # type: ignore[no-untyped-def]
        yield

    def plan(self, units) -> None:  # type: ignore[no-untyped-def]
        self.units.update(units)

    def progress(self, stage: str, done: int, total: int) -> None:
        self.reports.setdefault(stage, []).append((done, total))


def test_extractor_turns_frames_fps_and_prompts_into_the_three_conditions() -> None:
    from mmaudio import engine
    from mmaudio.features.clip import load_clip
    from tests.test_clip import TINY, tiny_checkpoint

    cpu = torch.device("cpu")
    sync = _StubSyncModel()
    models = engine.FeatureModels(clip=engine.Placed(load_clip(tiny_checkpoint(), config=TINY), cpu, torch.float32),
                                  synchformer=engine.Placed(sync, cpu, torch.float32))  # type: ignore[arg-type]
    clip = torch.rand(36, 30, 40, 3, generator=torch.Generator().manual_seed(0))  # 1.5 s at 24 fps
    source = engine.VisualSource.from_images(clip, 24.0)
    runtime = _RecordingRuntime()
    cond = engine.encode_conditions(models, source, engine.parse_prompts("rain\nthunder"), duration=None,
                                    mask_away_clip=False, runtime=runtime)
    assert cond.duration == 1.48  # 37 sync slots would need a frame at 1.48 s; the last one is at 1.458 s
    assert cond.source == "video" and cond.windows.is_single and cond.num_rows == 2
    # one clip: its CLIP and Synchformer features are shared by every prompt row (one window)
    assert cond.clip_features is not None and cond.clip_features.shape == (1, int(8 * 1.48), TINY["embed_dim"])
    assert cond.sync_features is not None
    assert cond.sync_features.shape == (1, sf.num_segments(int(25 * 1.48)) * 8, 768)
    assert cond.text_features.shape == (2, 77, TINY["text_cfg"]["width"])
    assert cond.text_index.tolist() == [[0], [1]] and cond.negative_features is None
    assert not torch.equal(cond.text_features[0], cond.text_features[1])
    assert cond.clip_seq_len == cond.clip_features.shape[1] and cond.sync_seq_len == cond.sync_features.shape[1]
    assert sum(sync.batches) == sf.num_segments(int(25 * 1.48))
    for stage in ("frames", "clip", "sync", "text"):
        calls = runtime.reports[stage]
        assert calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == sorted(d for d, _ in calls), stage
    assert runtime.units["sync"] == sf.num_segments(int(25 * 1.48)) and runtime.units["text"] == 1
    no_clip = engine.encode_conditions(models, source, engine.parse_prompts("rain"), duration=None,
                                       mask_away_clip=True, runtime=_RecordingRuntime())
    assert no_clip.clip_features is None and no_clip.sync_features is not None
    assert no_clip.sync_features.equal(cond.sync_features)
    torch.testing.assert_close(no_clip.text_features, cond.text_features[:1])  # batch 1 vs 2: rounding only
