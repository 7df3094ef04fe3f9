"""Golden-case handlers for the flow network, the sampler and the sequence lengths.

Everything (hyperparameters, call list, input names, durations, tolerances) is read from the case JSON, so
fixture folders with other sizes, seeds and durations run unchanged.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import torch

from mmaudio.model import MMAudioNetwork, NetworkConditions, NetworkConfig, SequenceLengths, config_from_state_dict
from mmaudio.modes import MODES
from mmaudio.sampling import build_conditions, flow_time_grid, reference_noise, sample

from .cases import GoldenCase, assert_rel_l2

_CALL = re.compile(r"^\s*(?P<lhs>\w+)\s*=\s*net(?:\.(?P<method>\w+))?\((?P<args>.*)\)\s*;?\s*$")


def _report(case: GoldenCase, what: str, err: float, tol: float) -> None:
    print(f"[{case.name}] {what}: rel_l2 {err:.2e} (tol {tol:.0e})")


def _check(case: GoldenCase, actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    err = assert_rel_l2(actual, expected, tol, f"{case.name}: {what}")
    _report(case, what, err, tol)


def _config(case: GoldenCase) -> NetworkConfig:
    model = case.spec["model"]
    mode = (model.get("sequence_lengths_from") or {}).get("mode")
    return NetworkConfig.from_constructor(model["constructor"], name=case.name, mode=mode)


def _check_derived(case: GoldenCase, net: MMAudioNetwork) -> None:
    """The derived sizes the fixture records must be those of our construction."""
    derived = case.spec["model"].get("derived", {})
    cfg = net.config
    ours = {
        "head_dim": cfg.head_dim,
        "num_joint_blocks": cfg.num_joint_blocks,
        "num_fused_blocks": cfg.fused_depth,
        "pre_only_joint_block_index": cfg.num_joint_blocks - 1,
        "convmlp_hidden": net.joint_blocks[0].latent_block.ffn.w1.weight.shape[0] if cfg.num_joint_blocks else None,
        "t_embed_frequency_embedding_size": cfg.timestep_frequency_dim,
        "t_embed_max_period": cfg.timestep_max_period,
        "latent_rot_shape": list(net.latent_rot.shape),
        "clip_rot_shape": list(net.clip_rot.shape),
    }
    for key, value in ours.items():
        if key in derived and value is not None:
            assert derived[key] == value, f"{case.name}: derived {key} is {derived[key]!r}, ours {value!r}"


def _build_network(case: GoldenCase) -> MMAudioNetwork:
    """Meta-device build from the constructor, then a strict load of the case's weights by assignment."""
    weights = case.weights()
    config = _config(case)
    detected = config_from_state_dict(weights)
    assert detected.architecture() == config.architecture(), (
        f"{case.name}: detection from the weights gives {detected.architecture()}, constructor says "
        f"{config.architecture()}"
    )
    with torch.device("meta"):
        net = MMAudioNetwork(config)
    net.load_checkpoint_state(weights, assign=True)
    net.eval()
    _check_derived(case, net)
    return net


# ---- kind "net": a small interpreter over the recorded calls ---------------------------------------------------
def _split_args(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _literal(text: str) -> float | int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if re.fullmatch(r"[+-]?\d+", text) else value


class _Recorder:
    """Forward hooks that capture module outputs named like the fixture's debug.* keys."""

    def __init__(self, net: MMAudioNetwork, debug_keys: list[str]) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.handles = []
        modules = dict(net.named_modules())
        self.static: dict[str, torch.Tensor] = {}
        for key in debug_keys:
            path = key.removeprefix("debug.")
            if path in ("latent_rot", "clip_rot"):
                self.static[key] = getattr(net, path)
                continue
            parts = path.split(".")
            for cut in range(len(parts), 0, -1):
                name = ".".join(parts[:cut])
                if name in modules:
                    self._hook(modules[name], key, parts[cut:])
                    break

    def _hook(self, module: torch.nn.Module, key: str, rest: list[str]) -> None:
        stream_index = {"latent": 0, "clip_f": 1, "text_f": 2}

        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            value = output[stream_index[rest[0]]] if rest else output
            self.values[key] = value.detach().clone()

        self.handles.append(module.register_forward_hook(hook))

    def close(self) -> dict[str, torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        return {**self.values, **self.static}


def _resolve(case: GoldenCase, call: dict[str, Any], env: dict[str, Any], token: str, param: str) -> Any:
    """A call argument: an earlier result, the io tensor the JSON names for ``param``, ``in.<token>``, or a number."""
    io = case.io()
    if token in env:
        return env[token]
    spec = call.get("args", {}).get(param)
    if isinstance(spec, dict) and "key" in spec:
        return io[spec["key"]]
    if f"in.{token}" in io:
        return io[f"in.{token}"]
    value = _literal(token)
    assert value is not None, f"{case.name}: unknown argument {token!r} in {call['call']!r}"
    return value


def run_net_case(case: GoldenCase) -> None:
    io = case.io()
    net = _build_network(case)
    env: dict[str, Any] = {}
    debug_keys = sorted(k for k in io if k.startswith("debug."))

    for call in case.spec["calls"]:
        match = _CALL.match(call["call"])
        assert match, f"{case.name}: cannot read call {call['call']!r}"
        method_name = match.group("method") or "forward"
        method: Callable[..., Any] = getattr(net, method_name)
        params = list(inspect.signature(method).parameters)

        args, kwargs = [], {}
        for position, token in enumerate(_split_args(match.group("args"))):
            if "=" in token:
                name, value = (s.strip() for s in token.split("=", 1))
                kwargs[name] = _resolve(case, call, env, value, name)
            else:
                args.append(_resolve(case, call, env, token, params[position]))

        recorder = _Recorder(net, debug_keys) if method_name == "predict_flow" and debug_keys else None
        result = method(*args, **kwargs)
        env[match.group("lhs")] = result

        for out_name, out in call["outputs"].items():
            actual = getattr(result, out_name) if isinstance(result, NetworkConditions) else result
            _check(case, actual, io[out["key"]], float(out["tol_rel_l2"]), f"{call['name']} -> {out_name}")

        if recorder is not None:
            captured = recorder.close()
            tol = max(float(out["tol_rel_l2"]) for out in call["outputs"].values())
            assert set(captured) == set(debug_keys), f"{case.name}: no module for {set(debug_keys) - set(captured)}"
            for key in debug_keys:
                _check(case, captured[key], io[key], tol, key)


# ---- kind "sampler" ------------------------------------------------------------------------------------------
def _given(text: str | None) -> bool:
    return bool(text) and text.strip().lower().startswith("given")


def run_sampler_case(case: GoldenCase) -> None:
    io = case.io()
    net = _build_network(case)
    noise = case.spec["noise"]
    x0 = io[noise["key"]]
    seed = re.search(r"manual_seed\((\d+)\)", noise.get("rule", ""))
    if seed:  # our CPU-generator helper draws what the reference drew
        assert torch.equal(reference_noise(int(seed.group(1)), x0.shape), x0), f"{case.name}: noise differs"

    for run in case.spec["runs"]:
        steps, cfg = int(run["num_steps"]), float(run["cfg_strength"])
        video = _given(run.get("clip_and_sync"))
        conditions, empty = build_conditions(
            net,
            clip_f=io["in.clip_f"] if video else None,
            sync_f=io["in.sync_f"] if video else None,
            text_f=io["in.text_f"],
            negative_text_f=io["in.negative_text_f"] if _given(run.get("negative_text")) else None,
            batch_size=x0.shape[0],
        )
        trajectory = [x0]
        x1 = sample(net, x0, conditions, empty, num_steps=steps, cfg_strength=cfg,
                    callback=lambda _k, _n, x, acc=trajectory: acc.append(x))
        results = {
            "x1": x1,
            "x1_unnormalized": net.unnormalize(x1),
            "trajectory": torch.stack(trajectory),
        }
        grid = flow_time_grid(steps)
        if "t_values_float32" in run:
            assert grid.tolist() == [float(v) for v in run["t_values_float32"]], f"{case.name}: grid differs"
        if "dt_values_float32" in run:
            assert (grid[1:] - grid[:-1]).tolist() == [float(v) for v in run["dt_values_float32"]]
        for out_name, out in run["outputs"].items():
            expected = io[out["key"]]
            if out_name == "t_grid":
                assert torch.equal(grid, expected), f"{case.name} {run['name']}: t grid differs"
                continue
            assert out_name in results, f"{case.name}: unknown sampler output {out_name!r}"
            _check(case, results[out_name], expected, float(out["tol_rel_l2"]), f"{run['name']} -> {out_name}")


# ---- kind "seqlen" -------------------------------------------------------------------------------------------
def _lengths_match(case: GoldenCase, step: dict[str, Any]) -> SequenceLengths:
    lengths = SequenceLengths.for_duration(float(step["duration"]), step["mode"])
    for name in ("latent_seq_len", "clip_seq_len", "sync_seq_len"):
        if name in step:
            assert getattr(lengths, name) == step[name], f"{case.name} {step['tag']}: {name} differs"
    return lengths


def run_seqlen_case(case: GoldenCase) -> None:
    io = case.io()
    net = _build_network(case)
    weights = case.weights()
    for step in case.spec["steps"]:
        lengths = _lengths_match(case, step)
        net.update_seq_lengths(lengths.latent_seq_len, lengths.clip_seq_len, lengths.sync_seq_len)
        inputs = {name: io[arg["key"]] for name, arg in step["inputs"].items()}
        flow = net(inputs["latent"], inputs["clip_f"], inputs["sync_f"], inputs["text_f"], inputs["t"])
        tol = 0.0
        for out_name, out in step["outputs"].items():
            tol = max(tol, float(out["tol_rel_l2"]))
            _check(case, flow, io[out["key"]], float(out["tol_rel_l2"]), f"{step['tag']} -> {out_name}")
        for table, key in step.get("debug", {}).items():
            _check(case, getattr(net, table), io[key], tol, f"{step['tag']} -> {table}")

        # A network constructed with these lengths computes the same thing bit for bit.
        fresh_config = net.config.with_lengths(lengths)
        with torch.device("meta"):
            fresh = MMAudioNetwork(fresh_config)
        fresh.load_checkpoint_state(weights, assign=True)
        fresh_flow = fresh(inputs["latent"], inputs["clip_f"], inputs["sync_f"], inputs["text_f"], inputs["t"])
        assert torch.equal(fresh_flow, flow), f"{case.name} {step['tag']}: update_seq_lengths != fresh build"


# ---- kind "seqconfig" ----------------------------------------------------------------------------------------
def run_seqconfig_case(case: GoldenCase) -> None:
    fields = ("latent_seq_len", "clip_seq_len", "sync_seq_len", "num_audio_samples")
    checked = 0
    for mode, table in case.spec["modes"].items():
        assert mode in MODES, f"{case.name}: unknown mode {mode!r}"
        assert MODES[mode].sample_rate == table["sampling_rate"], f"{case.name}: {mode} sample rate differs"
        assert MODES[mode].hop_length == table["spectrogram_frame_rate"], f"{case.name}: {mode} hop differs"
        for row in table["rows"]:
            lengths = SequenceLengths.for_duration(float(row["duration"]), mode)
            for name in fields:
                if name in row:
                    assert getattr(lengths, name) == row[name], (
                        f"{case.name}: {mode} {row['duration']} s: {name} {getattr(lengths, name)} != {row[name]}"
                    )
            if "audio_seconds" in row:
                assert math.isclose(lengths.audio_seconds, row["audio_seconds"], rel_tol=1e-12)
            checked += 1
    assert checked, f"{case.name}: no rows"
    print(f"[{case.name}] {checked} durations match exactly")


HANDLERS: dict[str, Callable[[GoldenCase], None]] = {
    "net": run_net_case,
    "sampler": run_sampler_case,
    "seqlen": run_seqlen_case,
    "seqconfig": run_seqconfig_case,
}
