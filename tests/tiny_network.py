"""A small random 16 kHz flow network and random features for it, shared by the sampler-path tests."""

from __future__ import annotations

import torch

from mmaudio.model import MMAudioNetwork, NetworkConfig, SequenceLengths

LENGTHS = SequenceLengths.for_duration(1.0, "16k")
CLIP_DIM, SYNC_DIM, TEXT_DIM, TEXT_LEN, LATENT_DIM = 24, 16, 20, 10, 8


def tiny_network(depth: int = 3) -> MMAudioNetwork:
    """Seeded weights large enough (std 0.3) that every block changes its input."""
    config = NetworkConfig(name="tiny", latent_dim=LATENT_DIM, clip_dim=CLIP_DIM, sync_dim=SYNC_DIM,
                           text_dim=TEXT_DIM, hidden_dim=32, depth=depth, fused_depth=1, num_heads=2, v2=True,
                           mode="16k", text_seq_len=TEXT_LEN, latent_seq_len=LENGTHS.latent_seq_len,
                           clip_seq_len=LENGTHS.clip_seq_len, sync_seq_len=LENGTHS.sync_seq_len)
    torch.manual_seed(0)
    net = MMAudioNetwork(config).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.3)
    return net


def random_features(seed: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """CLIP, Synchformer and text features of the tiny network's shapes."""
    gen = torch.Generator().manual_seed(seed)
    return {"clip_f": torch.randn(batch, LENGTHS.clip_seq_len, CLIP_DIM, generator=gen),
            "sync_f": torch.randn(batch, LENGTHS.sync_seq_len, SYNC_DIM, generator=gen),
            "text_f": torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=gen)}
