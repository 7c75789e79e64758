"""Distance functions of the DetKDS space, as registered modules: ``DISTANCES.build(dict(type='l1'))(s, t)``.

Every distance returns a scalar to MINIMISE (zero when student equals teacher), with the mean taken over what
remains after its own reduction. Corrections of the reference release: ``cos`` is ``1 - cosine`` (the release
returned the similarity); ``kl`` turns both sides into distributions itself (teacher probabilities, student
log-probabilities, temperature T), so it never depends on a ``logsoftmax`` transform; ``ssim``, ``iou`` and
``giou`` exist.

Class attributes used by the search space:
``groups`` — the knowledge groups (feature, response, localization) the distance is defined for;
``incompatible_after`` — transforms after which the distance is ill-posed or redundant.

Distances that are a mean of per-position values (``positionwise``) also give those values unreduced
(``elementwise``, positions along the last dim), so the searched loss can compute the sum of several FPN levels'
distances on the levels concatenated (each position weighted by ``1 / its level's count``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.structures.bbox import bbox_overlaps
from torch import Tensor, nn

from .registry import DISTANCES
from .transforms import named_dims, softmax_over

FEATURE, RESPONSE, LOCALIZATION = 'feature', 'response', 'localization'


class Distance(nn.Module):
    groups = frozenset({FEATURE, RESPONSE})
    incompatible_after = frozenset()

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f'{type(self).__name__}: student {tuple(student.shape)} and teacher '
                             f'{tuple(teacher.shape)} shapes differ')
        return self.compute(student, teacher)

    @property
    def positionwise(self) -> bool:
        """Whether the distance is the mean of ``elementwise``, whose values each depend on one spatial position
        of an ``N x C x P`` input (reductions over N or C only)."""
        return False

    def compute(self, student: Tensor, teacher: Tensor) -> Tensor:
        raise NotImplementedError

    def elementwise(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Unreduced values (positions along the last dim) whose mean is ``compute``; positionwise only."""
        raise NotImplementedError(f'{type(self).__name__} is not a mean of per-position values')


class _MeanDistance(Distance):
    """A distance that is the mean of its ``elementwise`` values."""

    @property
    def positionwise(self) -> bool:
        return True

    def compute(self, s, t):
        return self.elementwise(s, t).mean()


@DISTANCES.register_module(name='l1')
class L1Distance(_MeanDistance):
    groups = frozenset({FEATURE, RESPONSE, LOCALIZATION})

    def elementwise(self, s, t):
        return (s - t).abs()


@DISTANCES.register_module(name='l2')
class L2Distance(_MeanDistance):
    def elementwise(self, s, t):
        return (s - t).pow(2)


@DISTANCES.register_module(name='smooth_l1')
class SmoothL1Distance(_MeanDistance):
    groups = frozenset({FEATURE, RESPONSE, LOCALIZATION})

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(beta)

    def elementwise(self, s, t):
        return F.smooth_l1_loss(s, t, beta=self.beta, reduction='none')


@DISTANCES.register_module(name='kl')
class KLDivergence(_MeanDistance):
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` over ``dim`` (N, C or HW), summed over it, mean elsewhere.

    Inputs are scores (features, logits, GFL box distributions); the distance makes them distributions.
    """
    groups = frozenset({FEATURE, RESPONSE, LOCALIZATION})
    incompatible_after = frozenset({'logsoftmax_N', 'logsoftmax_C', 'logsoftmax_HW'})

    def __init__(self, temperature: float = 1.0, dim: str = 'C'):
        super().__init__()
        if dim not in ('N', 'C', 'HW'):
            raise ValueError(f'kl: dim must be N, C or HW, got {dim!r}')
        self.temperature = float(temperature)
        self.dim = dim

    @property
    def positionwise(self) -> bool:
        return self.dim != 'HW'

    def elementwise(self, s, t):
        dims = named_dims(s, self.dim)
        log_q = softmax_over(s / self.temperature, dims, log=True)
        log_p = softmax_over(t / self.temperature, dims, log=True)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=dims)
        return kl * self.temperature ** 2


@DISTANCES.register_module(name='quality_focal')
class QualityFocalDistance(_MeanDistance):
    """``sum_C BCE(s, t) * |s - t|^beta``, mean elsewhere: the binary cross-entropy of the student's probabilities
    towards the teacher's, focused on the positions where they differ (CrossKD's and BCKD's classification term;
    ``beta = 0`` is the plain binary cross-entropy, i.e. the binary KL up to the teacher's entropy, a constant of
    the student). Inputs are probabilities (the response inputs give sigmoid scores), clamped away from 0 and 1.
    """
    groups = frozenset({RESPONSE})
    # log-probabilities are negative: the cross-entropy of values outside [0, 1] is undefined (the response slot's
    # other ops keep sigmoid scores in [0, 1])
    incompatible_after = frozenset({'logsoftmax_N', 'logsoftmax_C', 'logsoftmax_HW'})

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(beta)

    def elementwise(self, s, t):
        s = s.clamp(1e-12, 1 - 1e-7)   # float32: 1 - 1e-7 is the largest value below 1 that log1p(-s) resolves
        bce = -(t * torch.log(s) + (1 - t) * torch.log1p(-s))
        if self.beta:
            bce = bce * (s - t).abs().pow(self.beta)
        return bce.sum(dim=1)


class _PerSampleSum(Distance):
    """A sum over every element divided by the batch size: the published methods' unit (FGD's and MGD's
    ``sum((S - T)^2) / N``), whose value grows with the map size, unlike the means above; their weights are
    correspondingly small (FGD's alpha 1e-3, MGD's 2e-5 on COCO)."""
    groups = frozenset({FEATURE})

    def compute(self, s, t):
        return self.elementwise_error(s - t).sum() / s.shape[0]

    def elementwise_error(self, difference: Tensor) -> Tensor:
        raise NotImplementedError


@DISTANCES.register_module(name='sse')
class SumSquaredError(_PerSampleSum):
    """``sum((s - t)^2) / N`` (FGD's focal and relation terms, MGD)."""

    def elementwise_error(self, difference):
        return difference.pow(2)


@DISTANCES.register_module(name='sae')
class SumAbsoluteError(_PerSampleSum):
    """``sum(|s - t|) / N`` (FGD's attention term)."""

    def elementwise_error(self, difference):
        return difference.abs()


def cosine_similarity(a: Tensor, b: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``F.cosine_similarity`` (the dot product over the product of the norms, each clamped at ``eps``), as
    ``(a . b) * rsqrt(|a|^2 |b|^2)`` on the reduced maps: on CPU ``linalg_vector_norm`` over a non-innermost dim
    (dim 1 of a feature map) is ~20x slower than a sum of squares, and dividing both full-size inputs by their
    norms costs two more full-size ops and their backward. Same values up to float rounding; below ``eps`` the
    clamp's gradient is 0, so a zero vector gives a zero value and a finite gradient, never NaN.
    One rsqrt per side, each of a squared norm clamped at ``eps^2``: rsqrt's derivative grows as x^-1.5, and on the
    product of two clamped squared norms (down to eps^4 = 1e-32) it overflows float32 to inf, which the clamp's
    zero gradient turns into NaN (a near-constant class map under ``pearson`` corrupted a whole student in one step)."""
    inverse_norm_a = a.pow(2).sum(dim=dim).clamp_min(eps * eps).rsqrt()
    inverse_norm_b = b.pow(2).sum(dim=dim).clamp_min(eps * eps).rsqrt()
    return (a * b).sum(dim=dim) * inverse_norm_a * inverse_norm_b   # on the reduced maps only


@DISTANCES.register_module(name='cos')
class CosineDistance(_MeanDistance):
    """``1 - cos(s, t)`` over dim 1, mean over the rest."""

    def elementwise(self, s, t):
        return 1 - cosine_similarity(s, t, dim=1, eps=1e-8)


@DISTANCES.register_module(name='pearson')
class PearsonDistance(_MeanDistance):
    """``1 - r``: cosine distance of the dim-1-centred inputs (the release's ``pear``)."""

    def elementwise(self, s, t):
        s = s - s.mean(dim=1, keepdim=True)
        t = t - t.mean(dim=1, keepdim=True)
        return 1 - cosine_similarity(s, t, dim=1, eps=1e-8)


@DISTANCES.register_module(name='correlation')
class CorrelationDistance(_MeanDistance):
    """Cross-correlation distance: standardise each flattened feature over the batch, ``c_d = mean_b s_bd t_bd``
    (the correlation coefficient of feature d), loss ``mean_d (1 - c_d)^2``.

    The release's ``cor`` took ``log2 sum (|c - 1|^2)^1.01``, a sum not a mean, unbounded below near a perfect
    match; the mean of squared gaps keeps its fixed point (c = 1) and is scale-free across layer sizes.
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = float(eps)

    def _standardise(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        centred = x - x.mean(0)
        # mean of squares rather than Tensor.var: the latter is ~100x slower on CPU over the batch dim
        return centred / torch.sqrt(centred.pow(2).mean(0) + self.eps)

    def elementwise(self, s, t):
        c = (self._standardise(s) * self._standardise(t)).mean(0)
        return (1 - c).pow(2).view(s.shape[1:])   # one value per feature (c, position)


@DISTANCES.register_module(name='ssim')
class SSIMDistance(Distance):
    """``1 - SSIM`` on ``N x C x H x W`` features, per channel with a uniform ``window x window`` window.

    Features are not images: ``c1``/``c2`` are absolute constants (defaults ``0.01^2``, ``0.03^2``).
    """
    groups = frozenset({FEATURE})
    incompatible_after = frozenset({'batch', 'channel', 'attention_maps'})   # these leave no H x W map

    def __init__(self, window: int = 3, c1: float = 1e-4, c2: float = 9e-4):
        super().__init__()
        self.window, self.c1, self.c2 = int(window), float(c1), float(c2)

    def compute(self, s, t):
        if s.dim() != 4:
            raise ValueError(f'ssim needs N x C x H x W inputs, got shape {tuple(s.shape)}')
        pad = self.window // 2

        def mean(x):
            return F.avg_pool2d(x, self.window, 1, pad, count_include_pad=False)
        mu_s, mu_t = mean(s), mean(t)
        var_s = mean(s * s) - mu_s ** 2
        var_t = mean(t * t) - mu_t ** 2
        cov = mean(s * t) - mu_s * mu_t
        ssim = ((2 * mu_s * mu_t + self.c1) * (2 * cov + self.c2)) / (
            (mu_s ** 2 + mu_t ** 2 + self.c1) * (var_s + var_t + self.c2))
        return (1 - ssim).mean()


class _BoxOverlapDistance(Distance):
    """``1 - overlap`` of aligned boxes ``[..., 4]`` (xyxy)."""
    groups = frozenset({LOCALIZATION})
    mode = 'iou'

    def compute(self, s, t):
        if s.shape[-1] != 4:
            raise ValueError(f'{self.mode} needs boxes [..., 4], got shape {tuple(s.shape)}')
        if s.numel() == 0:
            return s.sum() * 0
        overlap = bbox_overlaps(s.reshape(-1, 4), t.reshape(-1, 4), mode=self.mode, is_aligned=True)
        return (1 - overlap).mean()


@DISTANCES.register_module(name='iou')
class IoUDistance(_BoxOverlapDistance):
    mode = 'iou'


@DISTANCES.register_module(name='giou')
class GIoUDistance(_BoxOverlapDistance):
    mode = 'giou'
