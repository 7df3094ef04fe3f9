"""Test-wide settings: deterministic float32 CPU math, as the reference fixtures were made."""

from __future__ import annotations

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(min(2, torch.get_num_threads()))
