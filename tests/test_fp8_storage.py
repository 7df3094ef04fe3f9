"""fp8 (e4m3fn) weight storage computing in bf16: the network keeps working, close to its fp32 output, with the
layer weights at one byte each."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmaudio.ops import CASTING_LAYERS, store_layer_weights
from tests.test_sampling import _features, _tiny_net


def test_fp8_layer_weights_compute_in_bf16_close_to_fp32() -> None:
    reference = _tiny_net()
    narrow = _tiny_net().to(torch.bfloat16)
    changed = store_layer_weights(narrow, torch.float8_e4m3fn)
    layers = [m for m in narrow.modules() if isinstance(m, CASTING_LAYERS)]
    assert changed == len(layers) > 0
    assert all(m.weight.dtype == torch.float8_e4m3fn for m in layers)
    assert narrow.latent_std.dtype == torch.bfloat16  # bare parameters are not narrowed

    feats = _features()
    latent = torch.randn(2, reference.latent_seq_len, reference.latent_dim, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        want = reference(latent, feats["clip_f"], feats["sync_f"], feats["text_f"], t)
        got = narrow(latent.bfloat16(), feats["clip_f"].bfloat16(), feats["sync_f"].bfloat16(),
                     feats["text_f"].bfloat16(), t)
    assert got.dtype == torch.bfloat16
    cosine = F.cosine_similarity(got.float().flatten(), want.flatten(), dim=0)
    assert cosine > 0.98, float(cosine)


def test_fp8_storage_saturates_instead_of_turning_large_weights_into_nan() -> None:
    from mmaudio.ops import default_ops

    layer = default_ops().Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1000.0, -1000.0], [0.5, 0.25]]))
    assert store_layer_weights(layer, torch.float8_e4m3fn) == 1
    stored = layer.weight.float()
    assert torch.isfinite(stored).all()
    limit = torch.finfo(torch.float8_e4m3fn).max
    assert stored[0].tolist() == [limit, -limit] and stored[1].tolist() == [0.5, 0.25]
