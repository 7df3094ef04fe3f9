"""Reduced-precision weights: timestep embedding and rotary tables must stay float32.

v2's timestep frequencies reach 10^4 rad per unit time. The reference's pure-bf16 path (t and the frequency
buffer rounded to bf16) turns the sinusoid into something else (cosine ~0.77 to the fp32 features); ours keeps
t, the frequencies and the arguments in float32 and only casts the finished sinusoid.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mmaudio.model import MMAudioNetwork, NetworkConfig, SequenceLengths
from mmaudio.model.embeddings import timestep_frequencies
from mmaudio.model.layers import HeadRMSNorm
from mmaudio.sampling import build_conditions, flow_time_grid
from tests.parity.cases import rel_l2

LENGTHS = SequenceLengths.for_duration(1.0, "44k")


def _tiny_v2(hidden: int = 128) -> MMAudioNetwork:
    config = NetworkConfig(name="tiny", latent_dim=8, clip_dim=24, sync_dim=16, text_dim=20, hidden_dim=hidden,
                           depth=2, fused_depth=1, num_heads=2, v2=True, mode="44k", text_seq_len=10,
                           latent_seq_len=LENGTHS.latent_seq_len, clip_seq_len=LENGTHS.clip_seq_len,
                           sync_seq_len=LENGTHS.sync_seq_len)
    net = MMAudioNetwork(config).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in net.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            scale = param[0].numel() ** -0.5 if param.ndim >= 2 else 0.1
            param.copy_(noise * scale + (1.0 if "norm" in name or name == "latent_std" else 0.0))
    return net


@pytest.fixture(scope="module")
def nets() -> tuple[MMAudioNetwork, MMAudioNetwork]:
    net = _tiny_v2()
    return net, copy.deepcopy(net).to(torch.bfloat16)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


@torch.no_grad()
def test_v2_timestep_features_survive_bf16(nets: tuple[MMAudioNetwork, MMAudioNetwork]) -> None:
    fp32, bf16 = nets
    t = flow_time_grid(25)[:-1]
    # the sinusoid does not depend on the weights' dtype at all
    assert torch.equal(bf16.t_embed.sinusoid(t), fp32.t_embed.sinusoid(t))
    assert bf16.t_embed.sinusoid(t).dtype == torch.float32
    ours = _cosine(bf16.t_embed(t, dtype=torch.bfloat16), fp32.t_embed(t))
    assert ours.min() > 0.99, ours

    # the reference's pure-bf16 arithmetic, for contrast: the test would catch a bf16 t or frequency table
    freqs = timestep_frequencies(fp32.t_embed.frequency_dim, fp32.t_embed.max_period).bfloat16().float()
    args = t.bfloat16().float()[:, None] * freqs[None, :]
    sinusoid = torch.cat([args.cos(), args.sin()], dim=-1).bfloat16()
    naive = _cosine(bf16.t_embed.mlp(sinusoid), fp32.t_embed(t))
    assert naive.min() < 0.99 < ours.min()


@torch.no_grad()
def test_ode_wrapper_passes_float32_time(nets: tuple[MMAudioNetwork, MMAudioNetwork],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, bf16 = nets
    seen: list[torch.Tensor] = []
    original = bf16.t_embed.sinusoid
    monkeypatch.setattr(bf16.t_embed, "sinusoid", lambda t: seen.append(t) or original(t))
    conditions, empty = build_conditions(bf16, text_f=torch.randn(2, 10, 20, dtype=torch.bfloat16))
    latent = torch.randn(2, LENGTHS.latent_seq_len, 8, dtype=torch.bfloat16)
    t = flow_time_grid(25)[1]  # 0.04: 0.0400390625 in bf16
    v = bf16.ode_wrapper(t, latent, conditions, empty, 4.5)
    assert v.dtype == torch.bfloat16
    assert seen and all(s.dtype == torch.float32 and torch.all(s == t) for s in seen)


@torch.no_grad()
def test_bf16_network_tracks_fp32(nets: tuple[MMAudioNetwork, MMAudioNetwork]) -> None:
    fp32, bf16 = nets
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, LENGTHS.latent_seq_len, 8, generator=gen)
    feats = (torch.randn(2, LENGTHS.clip_seq_len, 24, generator=gen),
             torch.randn(2, LENGTHS.sync_seq_len, 16, generator=gen), torch.randn(2, 10, 20, generator=gen))
    t = torch.tensor([0.04, 0.96])
    ref = fp32(x, *feats, t)
    out = bf16(x.bfloat16(), *(f.bfloat16() for f in feats), t)
    assert out.dtype == torch.bfloat16
    assert rel_l2(out, ref) < 0.05


def test_rotary_tables_stay_float32(nets: tuple[MMAudioNetwork, MMAudioNetwork]) -> None:
    fp32, bf16 = nets
    assert bf16.latent_rot.dtype == torch.float32 and bf16.clip_rot.dtype == torch.float32
    assert torch.equal(bf16.latent_rot, fp32.latent_rot) and torch.equal(bf16.clip_rot, fp32.clip_rot)


@torch.no_grad()
def test_meta_build_with_bf16_weights_recomputes_float32_tables(nets: tuple[MMAudioNetwork, MMAudioNetwork]) -> None:
    fp32, bf16 = nets
    state = bf16.state_dict()
    with torch.device("meta"):
        net = MMAudioNetwork(fp32.config)
    net.load_state_dict(state, strict=True, assign=True)
    net.rebuild_buffers()
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in net.state_dict().values())
    t = flow_time_grid(8)
    assert torch.equal(net.t_embed.sinusoid(t), fp32.t_embed.sinusoid(t))
    assert torch.equal(net.latent_rot, fp32.latent_rot)


@torch.no_grad()
def test_fp16_storage_with_float32_activations(nets: tuple[MMAudioNetwork, MMAudioNetwork]) -> None:
    fp32, _ = nets
    half = copy.deepcopy(fp32).half()  # weights stored in fp16, cast to the activations' dtype per layer
    text = torch.randn(1, 10, 20)
    conditions, empty = build_conditions(half, text_f=text, dtype=torch.float32)
    ref_conditions, ref_empty = build_conditions(fp32, text_f=text)
    assert conditions.dtype == torch.float32
    latent = torch.randn(1, LENGTHS.latent_seq_len, 8)
    v = half.ode_wrapper(torch.tensor(0.5), latent, conditions, empty, 4.5)
    ref = fp32.ode_wrapper(torch.tensor(0.5), latent, ref_conditions, ref_empty, 4.5)
    assert v.dtype == torch.float32
    assert rel_l2(v, ref) < 1e-2


def test_rms_norm_uses_float32_epsilon_for_bf16() -> None:
    norm = HeadRMSNorm(16)
    x = (torch.randn(4, 16) * 1e-3).bfloat16()
    xf = x.float()
    expected = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)
    with torch.no_grad():
        assert torch.equal(norm(x), expected.bfloat16())


def test_tables_made_in_inference_mode_work_with_autograd() -> None:
    net = _tiny_v2(hidden=32)
    with torch.inference_mode():
        net.set_duration(2.0)  # rebuilds the rotary tables inside inference mode, as a ComfyUI node would
        conditions = net.get_empty_conditions(1)
        net.predict_flow(torch.randn(1, net.latent_seq_len, 8), torch.tensor([0.5]), conditions)
    latent = torch.randn(1, net.latent_seq_len, 8, requires_grad=True)
    flow = net.predict_flow(latent, torch.tensor([0.5]), net.get_empty_conditions(1))
    flow.sum().backward()
    assert latent.grad is not None and torch.isfinite(latent.grad).all()
