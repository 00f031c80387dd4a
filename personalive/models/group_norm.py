"""GroupNorm whose statistics kernel fills the GPU: the same function as ``nn.GroupNorm``, computed in two passes.

PyTorch's GroupNorm computes each (sample, group) row's mean and variance in one thread block. The VAE decoder at
512x512 has 4 frames x 32 groups = 128 rows of a million values each, one block on each of the H200's 132
multiprocessors: its statistics kernels read at a fraction of the memory's speed, 14.4 ms of the eager step's
~167 ms (sixth session's profile). The temporal modules' norms have as few rows.

:class:`SplitGroupNorm` cuts every row into ``k`` equal sub-rows (contiguous: a view of the same memory) and has
PyTorch's batch-norm statistics kernel (``torch.batch_norm_stats``, SyncBatchNorm's: one block per channel, fp32
results, no output written) reduce them as the channels of a batch of one: many blocks, short rows. It combines
them exactly (the mean of the means; the mean of the variances plus the variance of the means, in fp32) and
normalises with an inference-mode batch norm over (sample x channel): ``(x - mean) / sqrt(var + eps) * weight +
bias`` in fp32 in one kernel, GroupNorm's own formula. Same function to fp32 rounding (tests). Measured on an
H200 (tenth session, calls AA and AB): the step's norms 21.6 -> 14.4 ms of kernels, the eager step 5.8-6.3 ms
shorter a window (149.2 ms with CUDA graphs, 159.9 ms without, at 0 keyframes).

A channels-last image batch (the VAE decoder's, which the eager step runs channels-last on CUDA) is normalised
in its layout: PyTorch's CUDA kernel would copy it to NCHW first. Each sample's per-channel statistics (two fp32
reductions over all samples at once, :func:`channels_last_statistics`) are combined into the groups' as above,
and batch norm's element kernel writes the channels-last output (once per sample: the decoder's 4 frames).

Only the eager path uses it: under ``torch.compile``/``torch.export`` (inductor splits such reductions itself)
and in TorchScript tracing the plain GroupNorm runs, so compiled and exported steps are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from personalive.models.memory_layout import channels_last_only

# sub-rows: split while the rows are too few to fill a GPU and the halves stay long enough to read efficiently
# (chosen, not tuned: the VAE's 128 rows become 4096 of 32K values, at ~1.1 TB/s in call AA's profile)
_ENOUGH_ROWS = 4096
_SHORTEST_SUB_ROW = 8192


def split_factor(rows: int, row_length: int) -> int:
    """The power of two ``k`` each row is cut into: doubled while there are fewer than ``_ENOUGH_ROWS`` rows and
    the sub-rows stay at least ``_SHORTEST_SUB_ROW`` long, dividing the row exactly. 1: the plain GroupNorm is as
    good."""
    k = 1
    while rows * k < _ENOUGH_ROWS and row_length % (2 * k) == 0 and row_length // (2 * k) >= _SHORTEST_SUB_ROW:
        k *= 2
    return k


def _traced() -> bool:
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def _row_statistics(rows: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased variance) of each row of ``rows`` (R, L), in fp32."""
    if rows.is_cuda:  # one block per row (a "channel" of a batch of one), fp32 results for fp16 rows, no output
        mean, invstd = torch.batch_norm_stats(rows.unsqueeze(0), eps)
        return mean, invstd.pow(-2) - eps
    var, mean = torch.var_mean(rows.to(_exact(rows.dtype)), dim=1, correction=0)  # the CPU: tests force a split
    return mean, var


def _exact(dtype: torch.dtype) -> torch.dtype:
    """The statistics' dtype: fp32 for half-precision inputs (as GroupNorm computes them), else the input's."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class SplitGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with its statistics over sub-rows (module docstring). Same parameters and state-dict keys."""

    split: int | None = None  # a fixed k for tests; None: split_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._plain_only(x):
            return super().forward(x)
        if self._takes_channels_last(x):
            return self._channels_last(x)
        n, c = x.shape[0], x.shape[1]
        g = self.num_groups
        positions = x[0, 0].numel()
        if self.split is not None:
            k = self.split
        elif x.is_cuda:  # the one-block-per-row kernel is CUDA's; the CPU's spreads rows over its threads
            k = split_factor(n * g, positions * (c // g))
        else:
            k = 1
        if k == 1 or (positions * (c // g)) % k:
            return super().forward(x)
        mean, var = _row_statistics(x.reshape(n * g * k, -1), self.eps)  # k sub-rows per (sample, group)
        mean, var = mean.view(n, g, k).to(_exact(x.dtype)), var.view(n, g, k).to(_exact(x.dtype))
        group_mean = mean.mean(dim=2)
        group_var = var.mean(dim=2) + (mean - group_mean.unsqueeze(2)).square().mean(dim=2)
        per_channel = c // g
        # inference batch norm over (1, n*c, positions): (x - mean) / sqrt(var + eps) * weight + bias
        out = F.batch_norm(
            x.reshape(1, n * c, positions),
            group_mean.unsqueeze(2).expand(n, g, per_channel).reshape(n * c),
            group_var.unsqueeze(2).expand(n, g, per_channel).reshape(n * c),
            self.weight.to(mean.dtype).repeat(n),
            self.bias.to(mean.dtype).repeat(n),
            False,
            0.0,
            self.eps,
        )
        return out.view(x.shape)

    def biased(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``self(x + bias)`` for a per-channel ``bias`` (C,), the add folded into the statistics and the element
        kernel where the channels-last path runs: a convolution's bias without its own pass over the image (the
        VAE decoder's residual blocks, :mod:`personalive.models.resnet`)."""
        if not self._plain_only(x) and self._takes_channels_last(x):
            return self._channels_last(x, bias)
        return self(x + bias.view(1, -1, *[1] * (x.ndim - 2)))

    def _plain_only(self, x: torch.Tensor) -> bool:
        # inference only; split 1 forces PyTorch's kernels (benchmarks)
        return _traced() or not self.affine or x.ndim < 3 or x.requires_grad or self.split == 1

    def _takes_channels_last(self, x: torch.Tensor) -> bool:
        return channels_last_only(x) and (x.is_cuda or self.split is not None)

    def _channels_last(self, x: torch.Tensor, input_bias: torch.Tensor | None = None) -> torch.Tensor:
        """GroupNorm of a channels-last image batch without turning it to NCHW (PyTorch's CUDA kernel copies it):
        per-sample, per-channel statistics (:func:`channels_last_statistics`, fp32), combined into the groups'
        exactly, then batch norm's element kernel with each channel's group statistics, into a channels-last
        output. The statistics for all samples at once, the element kernel once per sample (the VAE decodes 4
        frames). With ``input_bias`` (C,) it normalises ``x + input_bias`` without adding it (:meth:`biased`)."""
        n, c = x.shape[0], x.shape[1]
        g, per_channel = self.num_groups, c // self.num_groups
        exact = _exact(x.dtype)
        mean, var = channels_last_statistics(x, self.eps)
        mean, var = mean.to(exact), var.to(exact)
        if input_bias is not None:  # the statistics of x + bias: the means shift, the variances stay
            mean = mean + input_bias.to(exact)
        mean, var = mean.view(n, g, per_channel), var.view(n, g, per_channel)
        group_mean = mean.mean(dim=2, keepdim=True)
        group_var = var.mean(dim=2, keepdim=True) + (mean - group_mean).square().mean(dim=2, keepdim=True)
        channel_mean = group_mean.expand(n, g, per_channel).reshape(n, c)
        channel_invstd = (group_var + self.eps).rsqrt().expand(n, g, per_channel).reshape(n, c)
        weight, bias = self.weight.to(exact), self.bias.to(exact)
        if input_bias is not None:  # (x + b - mean) = (x - (mean - b)): the element kernel reads x alone
            channel_mean = channel_mean - input_bias.to(exact)
        if not x.is_cuda:
            shape = (n, c, 1, 1)
            y = (x.to(exact) - channel_mean.view(shape)) * channel_invstd.view(shape) * weight.view(1, c, 1, 1)
            return (y + bias.view(1, c, 1, 1)).to(x.dtype).contiguous(memory_format=torch.channels_last)
        out = torch.empty_like(x)  # channels-last, as x
        for i in range(n):  # (x - mean) * invstd * weight + bias in fp32, GroupNorm's formula
            torch.batch_norm_elemt(
                x[i : i + 1], weight, bias, channel_mean[i], channel_invstd[i], self.eps, out=out[i : i + 1]
            )
        return out


def channels_last_statistics(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's per-channel mean and biased variance (n, c) of a channels-last image batch, in fp32 for
    half-precision inputs: two reductions over every sample's (h*w, c) view at once (the fp32 mean and the fp32
    sum of squares, the casts made as the values are read), variance = mean square - mean^2. Other dtypes: one
    Welford reduction (``torch.var_mean``) in their own dtype, exact to its rounding.

    Why this form (thirteenth session, calls AL and AM, H200): batch norm's statistics kernel once per sample (the
    code before) reads at ~0.3 TB/s; this is 2.0-2.9 ms a step faster with CUDA graphs. ``torch.var_mean`` (one
    Welford pass) returns its variance in the input's dtype: in fp16 the decoder's variances overflowed and the
    frames came out flat (call AJ); ``torch.std_mean`` cannot overflow but rounds the mean to fp16, and was slower.
    The cost of this form is cancellation where a channel's mean dwarfs its spread: the variance's error is
    ~mean^2 x 1e-6 (fp32 sums), below fp16's own rounding of the output while |mean| / std < ~30 (the group
    variance also holds the spread of its channels' means, and a residual block's folded ``conv1`` bias,
    :meth:`SplitGroupNorm.biased`, is not in ``x``), but not below fp32's: hence Welford for fp32. A module-level
    function so that benchmarks can put another in its place."""
    n, c = x.shape[:2]
    tokens = x.permute(0, 2, 3, 1).reshape(n, -1, c)  # a view: channels-last memory is (n, h, w, c)
    exact = _exact(x.dtype)
    if exact == x.dtype:
        var, mean = torch.var_mean(tokens, dim=1, correction=0)
        return mean, var
    mean = tokens.mean(dim=1, dtype=exact)
    mean_square = torch.linalg.vector_norm(tokens, 2, dim=1, dtype=exact).square() / tokens.shape[1]
    return mean, (mean_square - mean.square()).clamp_min(0)


def split_group_norms(module: nn.Module) -> int:
    """Make every plain ``nn.GroupNorm`` inside ``module`` a :class:`SplitGroupNorm` (in place: parameters, names
    and checkpoint keys unchanged); the number changed."""
    replaced = 0
    for child in module.modules():
        if type(child) is nn.GroupNorm:
            child.__class__ = SplitGroupNorm  # the same object: its parameters, hooks and flags stay
            replaced += 1
    return replaced
