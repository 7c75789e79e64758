"""Transformation ops of the DetKDS cascade (three feature slots, one response slot), as registered modules.

Each op is built once (``TRANSFORMS.build(dict(type='catt', temperature=0.5))``) and applied as ``op(x)``.
A knowledge path applies ops to a (student, teacher) pair through ``op.forward_pair(s, t)``; deterministic ops
apply themselves to each side, the stochastic ``mask`` draws ONE mask and applies it to both (the reference
release drew two independent masks). Every op accepts ``N x C x H x W``, ``N x C x L`` and ``N x D`` inputs:
dims from 2 on are "spatial" (HW); a 2-D input has no spatial dims (ops over HW then act over D, the only
non-batch dim, and spatial pooling/patching ops leave it unchanged).

Ops hold no state between calls (``batchnorm`` is a plain per-channel standardisation with batch statistics,
not a BatchNorm module created per call). Parameters that the release fixed (attention temperature 0.5, mask
ratio 0.65) are constructor arguments, so ``search_space.yaml`` can search them.
"""
from __future__ import annotations

import math

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import TRANSFORMS

# ops that provably compute the identity, whatever their input (used by the genome's canonical form)
IDENTITY_OPS = frozenset({'no', 'scale_r1'})


def spatial_dims(x: Tensor) -> Tuple[int, ...]:
    """The dims an "HW" op acts over: 2.. for 3-D/4-D input, the feature dim for 2-D input."""
    if x.dim() < 2:
        raise ValueError(f'transform input must have a batch and a feature dim, got shape {tuple(x.shape)}')
    return tuple(range(2, x.dim())) if x.dim() > 2 else (1,)


def named_dims(x: Tensor, which: str) -> Tuple[int, ...]:
    """Dims named N (batch), C (channel/feature) or HW (spatial; see ``spatial_dims``)."""
    if which == 'N':
        return (0,)
    if which == 'C':
        return (1,)
    if which == 'HW':
        return spatial_dims(x)
    raise ValueError(f'unknown dim name {which!r} (expected N, C or HW)')


def softmax_over(x: Tensor, dims: Tuple[int, ...], log: bool = False) -> Tensor:
    """(log-)softmax over several dims jointly (e.g. flattened H x W)."""
    if len(dims) == 1:
        return F.log_softmax(x, dims[0]) if log else F.softmax(x, dims[0])
    lse = torch.logsumexp(x, dim=dims, keepdim=True)
    return x - lse if log else torch.exp(x - lse)


def sqrt_softmax_over(x: Tensor, dims: Tuple[int, ...]) -> Tensor:
    """``sqrt(softmax)`` as ``exp(log_softmax / 2)``: a softmax entry that underflows to 0 would give
    ``sqrt``'s infinite derivative, and a NaN gradient that corrupts the student in one step."""
    return torch.exp(0.5 * softmax_over(x, dims, log=True))


class Transform(nn.Module):
    """Base class: a deterministic op applied to each side separately.

    ``positionwise``: the op treats every spatial position (dims 2..) on its own, so it gives the same values on
    several maps' positions flattened and concatenated into one ``N x C x P`` tensor as on each map apart (the
    searched loss uses this to run the end of a cascade once for all FPN levels). ``stochastic``: the op draws
    random numbers (an op that does must say so: the searched loss keeps the order of the draws).
    """
    positionwise = False
    stochastic = False

    def forward_pair(self, student: Tensor, teacher: Tensor) -> Tuple[Tensor, Tensor]:
        return self(student), self(teacher)

    def forward_fused(self, student: Tensor, teacher: Tensor, sizes: Sequence[int]) -> Tuple[Tensor, Tensor]:
        """``forward_pair`` on ``N x C x P`` tensors holding several maps' positions (``sizes`` per map, in
        order); only called on ``positionwise`` ops."""
        return self.forward_pair(student, teacher)

    def extra_repr(self) -> str:
        return ', '.join(f'{k}={v}' for k, v in vars(self).items() if not k.startswith('_') and k != 'training')


def cascade_pair(ops, student: Tensor, teacher: Tensor, level: int = 0,
                 mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Apply a cascade of ops to a (student, teacher) pair; the teacher FEATURE never carries gradient (an op's
    own trainable teacher-side block may). ``level``: the pair's index (FPN level), for ops with per-level
    modules (``per_level``). ``mask``: per-position weights of the pair (GT masks), multiplied into both sides
    first, unless the first op takes them itself (``forward_masked``: FGD's focal weighting weights by
    ``sqrt(mask)`` after computing attention on the unmasked teacher)."""
    teacher = teacher.detach()
    ops = list(ops)
    if mask is not None:
        if ops and hasattr(ops[0], 'forward_masked'):
            student, teacher = ops.pop(0).forward_masked(student, teacher, mask)
        else:
            mask = mask.to(student.dtype)
            student, teacher = student * mask, teacher * mask
    for op in ops:
        if getattr(op, 'per_level', False):
            student, teacher = op.forward_pair(student, teacher, level=level)
        else:
            student, teacher = op.forward_pair(student, teacher)
    return student, teacher


# ---------------------------------------------------------------------------------------------- slot 1
@TRANSFORMS.register_module(name='no')
class Identity(Transform):
    positionwise = True

    def forward(self, x: Tensor) -> Tensor:
        return x


@TRANSFORMS.register_module(name='satt')
class SpatialAttention(Transform):
    """``x * sqrt(A)`` with ``A = HW * softmax_HW(mean_C |x| / T)`` (a 2-D input has one position: A = 1)."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x
        dims = spatial_dims(x)
        energy = x.abs().mean(dim=1, keepdim=True) / self.temperature
        count = 1
        for d in dims:
            count *= x.shape[d]
        return x * (math.sqrt(count) * sqrt_softmax_over(energy, dims))


@TRANSFORMS.register_module(name='catt')
class ChannelAttention(Transform):
    """``x * sqrt(A)`` with ``A = C * softmax_C(mean_HW |x| / T)`` (2-D input: per-feature ``|x|``)."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        energy = x.abs()
        if x.dim() > 2:
            energy = energy.mean(dim=spatial_dims(x), keepdim=True)
        return x * (math.sqrt(x.shape[1]) * sqrt_softmax_over(energy / self.temperature, (1,)))


@TRANSFORMS.register_module(name='natt')
class BatchAttention(Transform):
    """``N * softmax_N(x / T)``: replaces x by its batch-wise attention (as released)."""
    positionwise = True

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        return x.shape[0] * F.softmax(x / self.temperature, dim=0)


@TRANSFORMS.register_module(name='mask')
class RandomMask(Transform):
    """Zero a random ``ratio`` of the spatial positions (all channels), the SAME positions on both sides.

    ``op(s, t)`` returns both masked with one draw; ``op(x)`` masks a single tensor.
    """
    positionwise = True
    stochastic = True

    def __init__(self, ratio: float = 0.65):
        super().__init__()
        if not 0.0 <= float(ratio) < 1.0:
            raise ValueError(f'mask ratio must be in [0, 1), got {ratio}')
        self.ratio = float(ratio)

    def draw(self, x: Tensor) -> Tensor:
        shape = (x.shape[0], *x.shape[1:]) if x.dim() == 2 else (x.shape[0], 1, *x.shape[2:])
        return self._keep(torch.rand(shape, device=x.device), x.dtype)

    def _keep(self, noise: Tensor, dtype: torch.dtype) -> Tensor:
        return (noise >= self.ratio).to(dtype)

    def forward(self, x: Tensor, teacher: Tensor = None):
        if teacher is not None:
            return self.forward_pair(x, teacher)
        return x * self.draw(x)

    def forward_pair(self, student: Tensor, teacher: Tensor) -> Tuple[Tensor, Tensor]:
        if student.shape != teacher.shape:
            raise ValueError(f'mask: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ')
        keep = self.draw(student)
        return student * keep, teacher * keep

    def forward_fused(self, student: Tensor, teacher: Tensor, sizes: Sequence[int]) -> Tuple[Tensor, Tensor]:
        if student.shape != teacher.shape:
            raise ValueError(f'mask: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ')
        keep = self.fused_scaling(student, sizes)
        return student * keep, teacher * keep

    def fused_scaling(self, student: Tensor, sizes: Sequence[int]) -> Tensor:
        """The ``N x 1 x P`` factor this op multiplies both sides by on fused maps (``forward_fused`` is the product
        with it), so that the searched loss can fold it with other per-position weights into one multiply."""
        # one draw per map, in map order: the same random numbers as masking each map apart
        n = student.shape[0]
        noise = torch.cat([torch.rand((n, 1, size), device=student.device) for size in sizes], 2)
        return self._keep(noise, student.dtype)


# ---------------------------------------------------------------------------------------------- slot 2
@TRANSFORMS.register_module(name='scale_r1')
class ScaleR1(Identity):
    """Max over 1 x 1 blocks: the identity (kept as its own name because the published space lists it)."""


def _pad_to_multiple(x: Tensor, size: int) -> Tensor:
    """-inf padding of the spatial dims up to a multiple of ``size`` (what max-pooling's ceil mode does)."""
    pads = []
    for n in reversed(x.shape[2:]):
        pads += [0, (-n) % size]
    return F.pad(x, pads, value=float('-inf')) if any(pads) else x


def _pairwise_max_pool(x: Tensor, size: int) -> Tensor:
    """Non-overlapping ``size`` max-pool over the spatial dims by rounds of 2-block maxima on strided slices
    (-inf padding = ceil mode). Same values as max_pool; several times faster without autograd (teacher side)
    because it skips the argmax bookkeeping."""
    x = _pad_to_multiple(x, size)
    while size > 1:
        for dim in range(2, x.dim()):
            even = x.narrow(dim, 0, x.shape[dim] // 2 * 2)
            x = torch.maximum(even.unfold(dim, 1, 2).squeeze(-1),
                              even.narrow(dim, 1, even.shape[dim] - 1).unfold(dim, 1, 2).squeeze(-1))
        size //= 2
    return x


class _MaxPool2x2(torch.autograd.Function):
    """2 x 2, stride-2 max-pool of ``N x C x H x W`` (H, W even) with max_pool2d's values and gradient, ~1.6x as
    fast on CPU fwd + bwd (benchmarks/elementwise_ops.py): the maxima come from strided slices and the argmax (the
    first maximum of each window in row-major order, as max_pool2d picks it) from three comparisons; the backward
    is max_pool2d's."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        window = x.view(n, c, h // 2, 2, w // 2, 2)
        top, bottom = window[:, :, :, 0], window[:, :, :, 1]   # N x C x H/2 x W/2 x 2
        top_max = torch.maximum(top[..., 0], top[..., 1])
        bottom_max = torch.maximum(bottom[..., 0], bottom[..., 1])
        # flat (row * W + col) index of each window's first maximum: its row's first maximum, top row on ties
        corner = (torch.arange(0, h, 2, device=x.device).view(-1, 1) * w +
                  torch.arange(0, w, 2, device=x.device))
        index = corner + torch.where(bottom_max > top_max, (bottom[..., 1] > bottom[..., 0]) + w,
                                     top[..., 1] > top[..., 0])
        ctx.save_for_backward(x, index)
        return torch.maximum(top_max, bottom_max)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, index = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                               index)


# Below about this many elements CPU max_pool2d's lower per-call cost wins over _MaxPool2x2 (fwd + bwd on N=2,
# where _MaxPool2x2 won: 64 channels from 24 x 24, 256 channels from 16 x 16 up).
_MAX_POOL_2X2_MIN_NUMEL = 1 << 16


class _MaxPool(Transform):
    size = 1

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x
        if not x.requires_grad:
            return _pairwise_max_pool(x, self.size)
        if x.dim() == 4 and self.size == 2 and x.device.type == 'cpu' and x.numel() >= _MAX_POOL_2X2_MIN_NUMEL:
            return _MaxPool2x2.apply(_pad_to_multiple(x, 2))
        if x.dim() == 4:
            return F.max_pool2d(x, self.size, self.size, ceil_mode=True)
        return F.max_pool1d(x, self.size, self.size, ceil_mode=True)


@TRANSFORMS.register_module(name='scale_r2')
class ScaleR2(_MaxPool):
    """2 x 2 max-pool, stride 2 (odd sizes padded)."""
    size = 2


@TRANSFORMS.register_module(name='multi_scale_r4')
class ScaleR4(_MaxPool):
    """4 x 4 max-pool, stride 4 (padded)."""
    size = 4


class _LocalPatches(Transform):
    """Cut the spatial dims into ``s``-sized patches (zero padding): ``b c h w -> b (c h' w') s s``."""
    size = 1

    def forward(self, x: Tensor) -> Tensor:
        s = self.size
        if x.dim() == 2:
            return x
        spatial = x.shape[2:]
        pads = []
        for n in reversed(spatial):
            pads += [0, (-n) % s]
        if any(pads):
            x = F.pad(x, pads)
        b, c = x.shape[:2]
        if x.dim() == 3:
            l_ = x.shape[2] // s
            return x.reshape(b, c * l_, s)
        h_, w_ = x.shape[2] // s, x.shape[3] // s
        patches = x.reshape(b, c, h_, s, w_, s).permute(0, 1, 2, 4, 3, 5)
        return patches.reshape(b, c * h_ * w_, s, s)


@TRANSFORMS.register_module(name='local_s1')
class LocalS1(Transform):
    """Every value its own patch: ``b c h w -> b (c h w) 1 1``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1, *([1] * (x.dim() - 2)))


@TRANSFORMS.register_module(name='local_s2')
class LocalS2(_LocalPatches):
    size = 2


@TRANSFORMS.register_module(name='local_s4')
class LocalS4(_LocalPatches):
    size = 4


@TRANSFORMS.register_module(name='scale')
class HalfShift(Transform):
    """``(x + 1) / 2``."""
    positionwise = True

    def forward(self, x: Tensor) -> Tensor:
        return (x + 1) / 2


# ---------------------------------------------------------------------------------------------- slot 3
@TRANSFORMS.register_module(name='batch')
class FlattenBatch(Transform):
    """``b ... -> b (...)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


@TRANSFORMS.register_module(name='channel')
class FlattenChannel(Transform):
    """``b c ... -> b c (...)``."""
    positionwise = True   # a reshape that keeps dims 0 and 1: the identity on an N x C x P tensor

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], x.shape[1], -1)


class _L2Norm(Transform):
    over = 'C'

    def forward(self, x: Tensor) -> Tensor:
        dims = named_dims(x, self.over)
        # times the reduced map's rsqrt rather than divided by its sqrt: a division's backward costs more full-size ops
        return x * x.pow(2).sum(dim=dims, keepdim=True).add(1e-12).rsqrt()


@TRANSFORMS.register_module(name='norm_HW')
class NormHW(_L2Norm):
    over = 'HW'


@TRANSFORMS.register_module(name='norm_C')
class NormC(_L2Norm):
    over = 'C'
    positionwise = True


@TRANSFORMS.register_module(name='norm_N')
class NormN(_L2Norm):
    over = 'N'
    positionwise = True


class _Softmax(Transform):
    over = 'C'
    log = False

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        return softmax_over(x / self.temperature, named_dims(x, self.over), log=self.log)


def _register_softmaxes():
    for over in ('N', 'C', 'HW'):
        for log in (False, True):
            name = f'{"log" if log else ""}softmax_{over}'
            cls = type(name, (_Softmax,), {'over': over, 'log': log, 'positionwise': over != 'HW',
                                           '__doc__': f'{"log-" if log else ""}softmax over {over} (temperature T)'})
            TRANSFORMS.register_module(name=name, module=cls)


_register_softmaxes()


@TRANSFORMS.register_module(name='min_max_normalize')
class MinMaxNormalize(Transform):
    """``(x - min) / (max - min + 1e-9)`` over the whole tensor."""

    def forward(self, x: Tensor) -> Tensor:
        low, high = x.min(), x.max()
        return (x - low) / (high - low + 1e-9)


@TRANSFORMS.register_module(name='batchnorm')
class BatchStandardize(Transform):
    """Per-channel standardisation with batch statistics (biased variance, eps 1e-5), no learned or running
    state: what a freshly created train-mode BatchNorm computes, without creating one per call."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        dims = (0,) + tuple(range(2, x.dim()))
        centred = x - x.mean(dim=dims, keepdim=True)
        # mean of squares rather than Tensor.var: the latter is ~100x slower on CPU over the batch dim
        var = centred.pow(2).mean(dim=dims, keepdim=True)
        return centred / torch.sqrt(var + self.eps)


# ---------------------------------------------------------------------------------------------- response
@TRANSFORMS.register_module(name='pow2')
class Square(Transform):
    """``x ** 2`` (listed for response knowledge in the paper, unregistered in the release)."""
    positionwise = True

    def forward(self, x: Tensor) -> Tensor:
        return x * x
