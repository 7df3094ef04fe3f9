"""The reference implementation's network and sampler, driven the way its ``generate()`` drives them.

The reference evaluates classifier-free guidance as two forward passes per step (``MMAudio.ode_wrapper``) and
integrates with ``FlowMatching(min_sigma=0, inference_mode='euler')``. It gets the same float32 weights as our
network (the state_dict keys are the same, and ``load_weights`` loads strictly), the same features and the
same initial noise (the engine's); its result is un-normalised with the same latent statistics and compared
with the engine's latents.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.components import VariantSpec
from bench.library import ReferenceModules
from bench.measure import RunRecorder


def build_reference_network(ref: ReferenceModules, spec: VariantSpec, state_dict: dict[str, torch.Tensor],
                            lengths: Any, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The reference MMAudio of ``spec`` holding ``state_dict``, cast as the reference demo casts it."""
    if spec.published:
        net = ref.networks.get_my_mmaudio(spec.name)
    else:
        cfg = spec.network
        net = ref.networks.MMAudio(
            latent_dim=cfg.latent_dim, clip_dim=cfg.clip_dim, sync_dim=cfg.sync_dim, text_dim=cfg.text_dim,
            hidden_dim=cfg.hidden_dim, depth=cfg.depth, fused_depth=cfg.fused_depth, num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio, latent_seq_len=cfg.latent_seq_len, clip_seq_len=cfg.clip_seq_len,
            sync_seq_len=cfg.sync_seq_len, text_seq_len=cfg.text_seq_len, v2=cfg.v2)
    net.load_weights(dict(state_dict))  # strict: proves the key sets and shapes agree
    net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    # As the demo does after the cast: the rotary tables are rebuilt in float32 for the clip's lengths.
    net.update_seq_lengths(lengths.latent_seq_len, lengths.clip_seq_len, lengths.sync_seq_len)
    return net


def reference_sample(ref: ReferenceModules, net: torch.nn.Module, x0: torch.Tensor, clip_f: torch.Tensor,
                     sync_f: torch.Tensor, text_f: torch.Tensor, *, steps: int, cfg: float, dtype: torch.dtype,
                     recorder: RunRecorder) -> torch.Tensor:
    """Normalised latents from the reference sampler. The stage ``sampling`` is recorded with the conditions
    projection inside it (also recorded alone as ``conditions``), as the engine's sampling stage includes it.
    Features of batch 1 serve every sample of ``x0``."""
    device = x0.device
    batch = x0.shape[0]
    clip_f, sync_f, text_f = (f.to(device=device, dtype=dtype).expand(batch, -1, -1) for f in (clip_f, sync_f, text_f))
    sampler = ref.flow_matching.FlowMatching(min_sigma=0, inference_mode="euler", num_steps=steps)
    calls = 0
    with recorder.stage("sampling"):
        with recorder.stage("conditions"):
            conditions = net.preprocess_conditions(clip_f, sync_f, text_f)
            empty = net.get_empty_conditions(batch)

        def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            if calls:
                recorder.step()  # the previous step (its forward passes and its Euler update) is over
            calls += 1
            return net.ode_wrapper(t, x, conditions, empty, cfg)

        x1 = sampler.to_data(velocity, x0.to(dtype))
        recorder.step()
    return x1
