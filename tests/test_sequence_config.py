"""Sequence lengths per duration: validation before any compute, and the network following the duration."""

from __future__ import annotations

import math

import pytest
import torch

from mmaudio.errors import InvalidInputError
from mmaudio.model import MIN_DURATION_S, MODES, MMAudioNetwork, NetworkConfig, SequenceLengths
from mmaudio.model.embeddings import rotary_cos_sin


def _tiny(mode: str = "44k", duration: float = 1.0) -> MMAudioNetwork:
    lengths = SequenceLengths.for_duration(duration, mode)
    config = NetworkConfig(name="tiny", latent_dim=8, clip_dim=24, sync_dim=16, text_dim=20, hidden_dim=32, depth=3,
                           fused_depth=1, num_heads=2, v2=True, mode=mode, text_seq_len=10,
                           latent_seq_len=lengths.latent_seq_len, clip_seq_len=lengths.clip_seq_len,
                           sync_seq_len=lengths.sync_seq_len)
    return MMAudioNetwork(config).eval()


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, -8, float("nan"), float("inf"), -float("inf"), 0.5, 0.639])
def test_bad_durations_are_rejected(bad: float) -> None:
    with pytest.raises(InvalidInputError, match="duration") as info:
        SequenceLengths.for_duration(bad, "44k")
    if bad > 0 and math.isfinite(bad):
        assert "0.64" in str(info.value)
        assert f"{bad:g}" in str(info.value)


@pytest.mark.parametrize("bad", ["8", None, True, [8.0]])
def test_non_numbers_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="duration"):
        SequenceLengths.for_duration(bad, "16k")  # type: ignore[arg-type]


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="mode"):
        SequenceLengths.for_duration(8.0, "22k")


def test_shortest_duration_is_one_sync_segment() -> None:
    assert pytest.approx(0.64) == MIN_DURATION_S
    lengths = SequenceLengths.for_duration(MIN_DURATION_S, "16k")
    assert lengths.sync_seq_len == 8 and lengths.num_sync_segments == 1
    assert lengths.clip_seq_len == 5 and lengths.latent_seq_len > 0


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("duration", [0.64, 1.0, 2.48, 3.3, 7.99, 8.0, 8.01, 13.7, 30.0])
def test_lengths_are_consistent(mode: str, duration: float) -> None:
    lengths = SequenceLengths.for_duration(duration, mode)
    spec = MODES[mode]
    assert lengths.sample_rate == spec.sample_rate
    assert lengths.sync_seq_len % 8 == 0
    assert lengths.num_audio_samples == lengths.latent_seq_len * spec.hop_length * 2
    # the decoded audio covers the duration and overshoots by less than one latent
    assert duration * spec.sample_rate <= lengths.num_audio_samples < (duration * spec.sample_rate
                                                                         + 2 * spec.hop_length)
    assert lengths.clip_seq_len == int(duration * 8)
    # all 16-frame segments fit in the 25 fps frames, and one more would not
    frames = duration * 25
    assert (lengths.num_sync_segments - 1) * 8 + 16 <= frames + 1e-9 < lengths.num_sync_segments * 8 + 16


def test_eight_seconds_are_the_training_lengths() -> None:
    assert (SequenceLengths.for_duration(8.0, "16k").latent_seq_len, SequenceLengths.for_duration(8.0, "44k")
            .latent_seq_len) == (250, 345)


def test_update_seq_lengths_rebuilds_rotary_tables() -> None:
    net = _tiny()
    before = net.latent_rot.clone()
    lengths = net.set_duration(2.5)
    assert (net.latent_seq_len, net.clip_seq_len, net.sync_seq_len) == (
        lengths.latent_seq_len, lengths.clip_seq_len, lengths.sync_seq_len)
    assert net.latent_rot.shape[1] == lengths.latent_seq_len != before.shape[1]
    assert net.clip_rot.shape[1] == lengths.clip_seq_len
    cos, sin = rotary_cos_sin(lengths.clip_seq_len, 16, freq_scaling=lengths.latent_seq_len / lengths.clip_seq_len)
    assert torch.equal(net.clip_rot[0, :, :, 0, 0], cos) and torch.equal(net.clip_rot[0, :, :, 1, 0], sin)
    # the network runs at the new lengths
    with torch.no_grad():
        flow = net(torch.randn(1, lengths.latent_seq_len, 8), torch.randn(1, lengths.clip_seq_len, 24),
                   torch.randn(1, lengths.sync_seq_len, 16), torch.randn(1, 10, 20), torch.tensor([0.3]))
    assert flow.shape == (1, lengths.latent_seq_len, 8)


def test_bad_duration_leaves_the_network_unchanged() -> None:
    net = _tiny()
    state = (net.latent_seq_len, net.clip_seq_len, net.sync_seq_len)
    with pytest.raises(InvalidInputError, match=r"0\.64"):
        net.set_duration(0.3)
    assert (net.latent_seq_len, net.clip_seq_len, net.sync_seq_len) == state


@pytest.mark.parametrize("lengths", [(0, 8, 16), (44, 8, 12), (44, -1, 16), (44.0, 8, 16)])
def test_update_seq_lengths_validates(lengths: tuple) -> None:
    with pytest.raises(InvalidInputError):
        _tiny().update_seq_lengths(*lengths)


def test_features_of_another_duration_are_rejected() -> None:
    net = _tiny(duration=1.0)
    other = SequenceLengths.for_duration(2.0, "44k")
    with pytest.raises(InvalidInputError, match="clip_f"):
        net.preprocess_conditions(torch.randn(1, other.clip_seq_len, 24), torch.randn(1, net.sync_seq_len, 16),
                                  torch.randn(1, 10, 20))
    with pytest.raises(InvalidInputError, match="latent"):
        conditions = net.get_empty_conditions(1)
        net.predict_flow(torch.randn(1, other.latent_seq_len, 8), torch.tensor([0.0]), conditions)
