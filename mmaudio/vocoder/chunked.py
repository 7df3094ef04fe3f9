"""Chunked vocoding with bounded memory, exact: BigVGAN's receptive field and the chunk loop that uses it.

The generator is a chain of convolutions (plain, dilated, transposed) and anti-aliased activations (a
zero-stuffing FIR upsampler, a pointwise snake, a decimating FIR low-pass). Each layer reads a bounded window of
its input; walking the chain and converting every window to mel frames (dividing by that layer's samples per
mel frame) and adding them up bounds the receptive field. The resblocks of a stage run side by side, so a stage
reaches as far as its widest block. Left and right are summed separately (the FIR filters are not symmetric);
the result is rounded up to whole mel frames: 40 for the 16 kHz vocoder, 22 for the 44.1 kHz one.

A chunk that carries this many mel frames of real context on each side computes its core exactly as the whole
signal does; at the clip's true edges the chunk ends where the clip ends, so its padding is the same too.
"""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import nn

from ..vae.chunked import (
    ChunkProgress,
    ProgressCallback,
    Reach,
    largest_span,
    largest_weight_values,
    run_cropped,
    same_conv_reach,
    split_evenly,
)
from .antialias import AntiAliasedActivation, LowPassFilter1d, UpSample1d
from .bigvgan import AMPBlock1, AMPBlock2, BigVGAN

# Live activations at the vocoder's peak, in units of its widest activation (channels x samples of one stage;
# see :func:`widest_activation`), besides the output and one weight copy. Measured from PyTorch's CPU allocations
# (bench/decode_memory.py): 10.3 for the full-size 44.1 kHz vocoder (a 1-minute decode: 548 MB measured, 579 MB
# estimated), 6.8-11.3 at widths 512-1536. Much narrower test models measure more (18 at width 256, 32 at 64):
# their 1-4 channel stages are padded to the CPU kernels' channel blocks, which published widths barely are.
VOCODER_LIVE_UNITS = 11


def transposed_conv_reach(conv: nn.ConvTranspose1d, rate: int) -> Reach:
    """Output n reads inputs m with stride·m + t - padding = n (t < kernel); ``rate`` is the input's."""
    (kernel,), (stride,), (padding,) = conv.kernel_size, conv.stride, conv.padding
    scale = Fraction(1, stride * rate)  # one output sample in mel frames
    return Reach((kernel - 1 - padding) * scale, padding * scale)


def upsample_reach(up: UpSample1d, rate: int) -> Reach:
    """Zero-stuffing transposed FIR after replicate padding and a crop; ``rate`` is the input's."""
    k, r = up.kernel_size, up.ratio
    left = Fraction(k - 1 - up.crop_left, r) + up.pad
    right = Fraction(up.crop_left, r) - up.pad
    return Reach(left / rate, right / rate)


def lowpass_reach(lowpass: LowPassFilter1d, rate: int) -> Reach:
    """FIR with ``pad_left`` samples of lead; ``rate`` is the input's (before decimation)."""
    return Reach(Fraction(lowpass.pad_left, rate), Fraction(lowpass.kernel_size - 1 - lowpass.pad_left, rate))


def activation_reach(act: AntiAliasedActivation, rate: int) -> Reach:
    """Upsample, pointwise snake, low-pass and decimate; ``rate`` is the activation's input and output rate."""
    return upsample_reach(act.upsample, rate) + lowpass_reach(act.downsample.lowpass, rate * act.upsample.ratio)


def resblock_reach(block: nn.Module, rate: int) -> Reach:
    """The chain of one AMP block (its residual paths read no further than the chain)."""
    reach = Reach()
    if isinstance(block, AMPBlock1):
        acts = list(block.activations)
        for conv1, conv2, act1, act2 in zip(block.convs1, block.convs2, acts[0::2], acts[1::2], strict=True):
            reach = reach + activation_reach(act1, rate) + same_conv_reach(conv1, rate)
            reach = reach + activation_reach(act2, rate) + same_conv_reach(conv2, rate)
    elif isinstance(block, AMPBlock2):
        for conv, act in zip(block.convs, block.activations, strict=True):
            reach = reach + activation_reach(act, rate) + same_conv_reach(conv, rate)
    else:
        raise TypeError(f"unknown BigVGAN resblock {type(block).__name__}")
    return reach


def vocoder_reach(vocoder: BigVGAN) -> Reach:
    """The receptive field of one output sample, in mel frames each side (an upper bound)."""
    reach = same_conv_reach(vocoder.conv_pre, 1)
    rate = 1
    per_stage = len(vocoder.config.resblock_kernel_sizes)
    for i, (up,) in enumerate(vocoder.ups):
        reach = reach + transposed_conv_reach(up, rate)
        rate *= up.stride[0]
        widest = Reach()
        for block in vocoder.resblocks[i * per_stage : (i + 1) * per_stage]:
            widest = widest.widest(resblock_reach(block, rate))
        reach = reach + widest
    return reach + activation_reach(vocoder.activation_post, rate) + same_conv_reach(vocoder.conv_post, rate)


def vocoder_context_frames(vocoder: BigVGAN) -> int:
    """Mel frames of context a chunk needs on each side so that its core equals the whole-signal output."""
    return vocoder_reach(vocoder).frames()


@torch.no_grad()
def vocode_in_chunks(vocoder: BigVGAN, mel: torch.Tensor, chunk: int,
                     progress: ProgressCallback | None = None) -> torch.Tensor:
    """``vocoder(mel)`` for a long mel (B, num_mels, F), ``chunk`` mel frames at a time (each with
    :func:`vocoder_context_frames` of context): float32 (B, 1, F·hop), equal to the whole-signal output within
    rounding. Reports one step per chunk to ``progress``."""
    frames, hop = mel.shape[-1], vocoder.hop_length
    margin = vocoder_context_frames(vocoder)
    spans = split_evenly(frames, chunk)
    steps = ChunkProgress(progress, len(spans))
    out = torch.empty(mel.shape[0], 1, frames * hop, device=mel.device, dtype=torch.float32)
    size = max(span.size for span in spans) + 2 * margin
    for span in spans:
        out[..., span.start * hop : span.stop * hop] = run_cropped(vocoder, mel, span, margin, frames, 1, hop, size)
        steps.advance()
    return out


def widest_activation(vocoder: BigVGAN) -> int:
    """Values per mel frame (per batch row) of the widest stage output: channels x samples per mel frame."""
    widest, rate = vocoder.conv_pre.out_channels, 1
    for (up,) in vocoder.ups:
        rate *= up.stride[0]
        widest = max(widest, up.out_channels * rate)
    return widest


def vocode_memory(vocoder: BigVGAN, frames: int, chunk: int | None, batch: int, itemsize: int) -> int:
    """Peak activation bytes of vocoding ``frames`` mel frames: whole (``chunk`` None) or in chunks of ``chunk``
    mel frames with their context; the float32 output included."""
    chunked = chunk is not None and frames > chunk
    frames_at_once = largest_span(frames, chunk) + 2 * vocoder_context_frames(vocoder) if chunked else frames
    live = VOCODER_LIVE_UNITS * widest_activation(vocoder) * frames_at_once * itemsize
    output = frames * vocoder.hop_length * 4
    return batch * (live + output) + largest_weight_values(vocoder) * itemsize
