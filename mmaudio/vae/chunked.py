"""Exact decoding and encoding of long sequences in overlapping chunks, with memory bounded by the chunk.

Both halves of the VAE are convolutional except one global self-attention layer in their mid block. A chunk of
a convolutional network computes its core exactly when it carries, on each side, as much real context as the
network's receptive field (its *reach*); where the chunk ends at the clip's true edge it sees the same padding
as the whole clip. The attention layer has no such locality, so a long sequence goes in two passes:

1. keys and values of every frame (each frame is projected and normalized on its own), from the convolutional
   part before the attention, run in overlapping chunks;
2. per chunk: the part before the attention again (on the chunk plus the reach of the part after it), the
   attention of those frames against all keys (queries in blocks: memory O(block · T), not O(T²)), then the
   part after the attention; the core of the result is kept.

What stays whole is small: keys and values at the latent rate (2 · width · T values) and the output.
The same span arithmetic serves the vocoder (see :mod:`mmaudio.vocoder.chunked`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import pairwise

import torch
from torch import nn

from .blocks import AttentionBlock, ResnetBlock, Upsample
from .distribution import LatentDistribution
from .model import VAE, Decoder, Encoder

# Queries attended at once in the chunked attention: scores take QUERY_BLOCK · T values.
QUERY_BLOCK = 256
# Live activations at the peak of one chunk, in units of (attention width x frames of the chunk with context):
# the chunk's input, its q/k/v before and after normalization, attention output and residual. With the rest of
# :func:`run_memory` this gives 1.06-1.12x the peak PyTorch allocates for full-size decoders and encoders
# (2000 latent frames in chunks of 512; bench/decode_memory.py measures whole runs).
VAE_LIVE_UNITS = 9
# Score matrices (query_block x T) alive at once inside the attention: q·kᵀ, its softmax, and a scaled copy.
SCORE_COPIES = 3

ProgressCallback = Callable[[int, int], None]


# ---- receptive fields ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reach:
    """How far before (left) and after (right) its own position an output can read its input, in frames of a
    chosen base rate (latent frames for the VAE, mel frames for the vocoder). Reaches of a chain add up."""

    left: Fraction = Fraction(0)
    right: Fraction = Fraction(0)

    def __add__(self, other: Reach) -> Reach:
        return Reach(self.left + other.left, self.right + other.right)

    def widest(self, other: Reach) -> Reach:
        """The reach of two branches run side by side."""
        return Reach(max(self.left, other.left), max(self.right, other.right))

    def frames(self) -> int:
        """Whole base frames that cover both sides."""
        return math.ceil(max(self.left, self.right))


def same_conv_reach(conv: nn.Conv1d, rate: int) -> Reach:
    """A stride-1 conv: output n reads inputs n - padding + dilation·j (j < kernel); ``rate`` = samples per base
    frame at the conv."""
    (kernel,), (dilation,), (padding,) = conv.kernel_size, conv.dilation, conv.padding
    if conv.stride != (1,):
        raise ValueError(f"expected a stride-1 convolution, got stride {conv.stride}")
    return Reach(Fraction(padding, rate), Fraction(dilation * (kernel - 1) - padding, rate))


def resnet_reach(block: ResnetBlock, rate: int) -> Reach:
    """Two convs in a row; the skip path is pointwise (at most a 1x1 projection)."""
    return same_conv_reach(block.conv1, rate) + same_conv_reach(block.conv2, rate)


def upsample_reach(up: Upsample, coarse_rate: int) -> Reach:
    """Nearest repeat (fine frame j reads coarse frame j // 2: up to half a coarse frame back), then a conv."""
    return Reach(Fraction(1, 2 * coarse_rate)) + same_conv_reach(up.conv, 2 * coarse_rate)


def downsample_reach(fine_rate: int) -> Reach:
    """:class:`~.blocks.Downsample`: 1x1 conv, pairs averaged (coarse frame j reads fine frames 2j and 2j + 1),
    1x1 conv."""
    return Reach(right=Fraction(1, fine_rate))


def decoder_reaches(decoder: Decoder) -> tuple[int, int]:
    """Latent frames of context needed by the decoder before and after its attention."""
    before = same_conv_reach(decoder.conv_in, 1) + resnet_reach(decoder.mid.block_1, 1)
    after = resnet_reach(decoder.mid.block_2, 1)
    rate = 1
    for level in reversed(decoder.up):
        for block in level.block:
            after = after + resnet_reach(block, rate)
        if level.upsample is not None:
            after = after + upsample_reach(level.upsample, rate)
            rate *= 2
    after = after + same_conv_reach(decoder.conv_out, rate)
    return before.frames(), after.frames()


def encoder_rate(encoder: Encoder) -> int:
    """Mel frames per latent frame (2 for the published VAEs)."""
    return 2 ** sum(level.downsample is not None for level in encoder.down)


def encoder_reaches(encoder: Encoder) -> tuple[int, int]:
    """Latent frames of context needed by the encoder before and after its attention."""
    rate = encoder_rate(encoder)
    before = same_conv_reach(encoder.conv_in, rate)
    for level in encoder.down:
        for block in level.block:
            before = before + resnet_reach(block, rate)
        if level.downsample is not None:
            before = before + downsample_reach(rate)
            rate //= 2
    before = before + resnet_reach(encoder.mid.block_1, rate)
    after = resnet_reach(encoder.mid.block_2, rate) + same_conv_reach(encoder.conv_out, rate)
    return before.frames(), after.frames()


# ---- spans -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """Frames [start, stop) of a sequence."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def widened(self, margin: int, length: int, size: int = 0) -> Span:
        """This span with ``margin`` frames of context each side, clipped to the sequence [0, length), then grown
        (after it, then before it) to ``size`` frames where the sequence allows.

        Growing gives every chunk of a pass the same shape, so kernels are set up once, not per chunk; more
        context than the reach leaves the span's own frames unchanged.
        """
        start, stop = max(0, self.start - margin), min(length, self.stop + margin)
        missing = max(0, size - (stop - start))
        stop = min(length, stop + missing)
        start = max(0, stop - max(size, stop - start))
        return Span(start, stop)


def split_evenly(length: int, chunk: int) -> list[Span]:
    """[0, length) cut into the fewest spans of at most ``chunk`` frames, of near-equal sizes."""
    if length <= 0 or chunk <= 0:
        raise ValueError(f"cannot split {length} frames into chunks of {chunk}")
    count = -(-length // chunk)
    bounds = [i * length // count for i in range(count + 1)]
    return [Span(a, b) for a, b in pairwise(bounds)]


def largest_span(length: int, chunk: int) -> int:
    """Frames in the largest span :func:`split_evenly` makes (what a chunk's memory depends on)."""
    count = -(-length // chunk)
    return -(-length // count)


class ChunkProgress:
    """Counts finished chunks and reports ``callback(done, total)`` after each; a callback that raises cancels."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.done = 0

    def advance(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


def run_cropped(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, span: Span, margin: int, length: int,
                in_scale: int = 1, out_scale: int = 1, size: int = 0) -> torch.Tensor:
    """``fn`` (a convolutional map whose reach is ``margin`` base frames) on ``span`` of a sequence of ``length``
    base frames, computed from the span plus its context (at least ``size`` frames, see :meth:`Span.widened`)
    and cropped to the span.

    ``x`` has ``in_scale`` frames per base frame (any tail beyond ``length · in_scale`` goes with the last
    chunk, as the whole sequence has it); the output has ``out_scale``.
    """
    context = span.widened(margin, length, size)
    stop = x.shape[-1] if context.stop == length else context.stop * in_scale
    y = fn(x[..., context.start * in_scale : stop])
    offset = span.start - context.start
    return y[..., offset * out_scale : (offset + span.size) * out_scale]


# ---- the two-pass chunked attention network --------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionSplit:
    """A network seen as: convolutional part, one global attention layer, convolutional part.

    Base frames are those of the attention layer (latent frames); the input has ``in_scale`` frames per base
    frame, the output ``out_scale``.
    """

    before: Callable[[torch.Tensor], torch.Tensor]
    attention: AttentionBlock
    after: Callable[[torch.Tensor], torch.Tensor]
    before_reach: int
    after_reach: int
    in_scale: int
    out_scale: int

    @classmethod
    def of_decoder(cls, decoder: Decoder) -> AttentionSplit:
        before, after = decoder_reaches(decoder)
        scale = 2 ** sum(level.upsample is not None for level in decoder.up)
        return cls(decoder.before_attention, decoder.mid.attn_1, decoder.after_attention, before, after, 1, scale)

    @classmethod
    def of_encoder(cls, encoder: Encoder) -> AttentionSplit:
        before, after = encoder_reaches(encoder)
        return cls(encoder.before_attention, encoder.mid.attn_1, encoder.after_attention, before, after,
                   encoder_rate(encoder), 1)


def keys_and_values(split: AttentionSplit, x: torch.Tensor, length: int, spans: list[Span],
                    steps: ChunkProgress) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 1: the attention's keys and values of every base frame, (B, 1, length, C) each (views of
    (B, 1, C, length) buffers, the layout the whole-sequence path has)."""
    keys = values = None
    size = max(span.size for span in spans) + 2 * split.before_reach
    for span in spans:
        h = run_cropped(split.before, x, span, split.before_reach, length, split.in_scale, size=size)
        _, k, v = split.attention.project(h)
        if keys is None or values is None:
            batch, _, _, channels = k.shape
            keys = k.new_empty(batch, 1, channels, length)
            values = v.new_empty(batch, 1, channels, length)
        keys[..., span.start : span.stop] = k.transpose(-1, -2)
        values[..., span.start : span.stop] = v.transpose(-1, -2)
        del h, k, v  # freed before the next chunk allocates, so only one chunk is alive at a time
        steps.advance()
    assert keys is not None and values is not None
    return keys.transpose(-1, -2), values.transpose(-1, -2)


def run_in_chunks(split: AttentionSplit, x: torch.Tensor, length: int, chunk: int,
                  progress: ProgressCallback | None = None, query_block: int = QUERY_BLOCK) -> torch.Tensor:
    """The network on ``x`` (``length`` base frames), ``chunk`` base frames at a time, equal to the whole-sequence
    forward within rounding. Reports 2 · (number of chunks) steps to ``progress``."""
    spans = split_evenly(length, chunk)
    steps = ChunkProgress(progress, 2 * len(spans))
    keys, values = keys_and_values(split, x, length, spans, steps)

    out = None
    size = max(span.size for span in spans) + 2 * split.after_reach
    for span in spans:
        context = span.widened(split.after_reach, length, size)
        h = run_cropped(split.before, x, context, split.before_reach, length, split.in_scale,
                        size=context.size + 2 * split.before_reach)
        y = split.after(split.attention.attend(h, keys, values, query_block))
        offset = span.start - context.start
        y = y[..., offset * split.out_scale : (offset + span.size) * split.out_scale]
        if out is None:
            out = y.new_empty(*y.shape[:-1], length * split.out_scale)
        out[..., span.start * split.out_scale : span.stop * split.out_scale] = y
        del h, y  # as above
        steps.advance()
    assert out is not None
    return out


@torch.no_grad()
def decode_in_chunks(vae: VAE, z: torch.Tensor, chunk: int, progress: ProgressCallback | None = None,
                     query_block: int = QUERY_BLOCK) -> torch.Tensor:
    """:meth:`VAE.decode` of a long latent (B, embed_dim, T), ``chunk`` latent frames at a time."""
    vae.require_folded()
    split = AttentionSplit.of_decoder(vae.decoder)
    mel = run_in_chunks(split, z, z.shape[-1], chunk, progress, query_block)
    return mel.mul_(vae.data_std.to(mel)).add_(vae.data_mean.to(mel))


@torch.no_grad()
def encode_in_chunks(vae: VAE, mel: torch.Tensor, chunk: int, progress: ProgressCallback | None = None,
                     query_block: int = QUERY_BLOCK) -> LatentDistribution:
    """:meth:`VAE.encode` of a long mel (B, data_dim, F), ``chunk`` latent frames at a time."""
    encoder = vae.require_encoder()
    split = AttentionSplit.of_encoder(encoder)
    length = mel.shape[-1] // split.in_scale
    if length == 0:
        raise ValueError(f"a mel of {mel.shape[-1]} frames is too short to encode")
    mean, std = vae.data_mean.to(mel), vae.data_std.to(mel)
    # The input normalization is pointwise, so it is applied per chunk.
    split = replace(split, before=lambda m: encoder.before_attention((m - mean) / std))
    return LatentDistribution.from_moments(run_in_chunks(split, mel, length, chunk, progress, query_block), dim=1)


# ---- memory ----------------------------------------------------------------------------------------------------
def largest_weight_values(module: nn.Module) -> int:
    """Values of the largest parameter: a conv may take a copy of its weight per call (a cast from the storage
    dtype, or a reorder into a CPU kernel's blocked layout)."""
    return max((p.numel() for p in module.parameters()), default=0)


def run_memory(split: AttentionSplit, length: int, chunk: int | None, out_channels: int, batch: int,
               itemsize: int, query_block: int = QUERY_BLOCK) -> int:
    """Peak activation bytes of :func:`run_in_chunks` (or of the whole-sequence forward when ``chunk`` is None):
    keys and values of every frame, the output, one chunk's activations (with context) and its scores."""
    width = split.attention.qkv.in_channels
    out = out_channels * split.out_scale * length
    if chunk is None:
        # The whole forward's attention may hold a full length x length score matrix.
        values = VAE_LIVE_UNITS * width * length + SCORE_COPIES * length * length + out
    else:
        frames = min(length, largest_span(length, chunk) + 2 * (split.before_reach + split.after_reach))
        values = 2 * width * length + VAE_LIVE_UNITS * width * frames + SCORE_COPIES * query_block * length + out
    return batch * itemsize * values
