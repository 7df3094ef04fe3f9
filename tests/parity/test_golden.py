"""One test per golden case of the reference fixtures, dispatched on the case's ``kind``.

A case whose files are missing or unreadable fails; an empty folder fails; an unknown kind fails. A known kind
whose component is not implemented yet is a strict expected failure, never a pass.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from .cases import GoldenCase, discover_cases, golden_dir

# Every kind the reference fixtures define, and the handler module that owns it.
KNOWN_KINDS: dict[str, str] = {
    "net": "handlers_net",
    "sampler": "handlers_net",
    "seqlen": "handlers_net",
    "seqconfig": "handlers_net",
    "vae_decode": "handlers_decoder",
    "vocoder": "handlers_decoder",
    "vae_plus_vocoder": "handlers_decoder",
    "mel": "handlers_decoder",
    "vae_encode": "handlers_decoder",
    "video": "handlers_features",
    "synchformer_visual": "handlers_features",
    "clip_image": "handlers_features",
    "clip_text": "handlers_features",
}


def _handler_for(kind: str) -> Callable[[GoldenCase], None] | None:
    module_name = KNOWN_KINDS[kind]
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith(module_name):
            return None
        raise
    handlers: dict[str, Callable[[GoldenCase], None]] = getattr(module, "HANDLERS", {})
    return handlers.get(kind)


CASE_PATHS = discover_cases()


def test_reference_folder_has_cases() -> None:
    assert CASE_PATHS, f"no golden/*.json found in {golden_dir()}: set MMAUDIO_REFERENCE_DIR to a fixture folder"


@pytest.mark.parametrize("case_path", CASE_PATHS, ids=[p.name.removesuffix(".json") for p in CASE_PATHS])
def test_golden_case(case_path: Path, request: pytest.FixtureRequest) -> None:
    case = GoldenCase.from_file(case_path)
    if case.kind not in KNOWN_KINDS:
        pytest.fail(f"case {case.name}: unknown kind {case.kind!r}; known kinds: {sorted(KNOWN_KINDS)}")
    handler = _handler_for(case.kind)
    if handler is None:
        request.applymarker(pytest.mark.xfail(strict=True, raises=NotImplementedError,
                                              reason=f"component for kind {case.kind!r} not built yet"))
        raise NotImplementedError(f"no handler for kind {case.kind!r}")
    torch.manual_seed(0)
    with torch.no_grad():
        handler(case)
