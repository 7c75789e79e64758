"""The published methods' building blocks as search-space ops, so that PKD, MGD and FGD's focal imitation are
genomes of the space (``search_space.yaml`` ``methods``) and their parts can be recombined by the search:

* ``channel_standardize`` (PKD): per-channel standardisation over N and the positions, unbiased std, ``+1e-6``
  on the std; then ``l2`` with half PKD's ``loss_weight`` is ``PKDLoss``;
* ``teacher_att`` (FGD's focal weighting): both sides times ``sqrt`` of the TEACHER's spatial and channel
  attention; on the ``fg_bg`` input it also takes the GT masks itself, as ``sqrt(mask)`` on the unmasked maps
  (FGD weights the squared error by mask x attention), so ``fg_bg: teacher_att | sse x alpha`` is FGD's
  ``alpha * L_fg + alpha / 2 * L_bg``;
* ``attention_maps`` (FGD's attention term): a map replaced by its channel then spatial attention, flattened;
  with ``sae`` it is ``L_att``;
* ``context`` (FGD's global relation): GcBlock context added on each side by its own trainable block (the
  teacher's too), per FPN level; with ``sse`` it is ``L_rela``;
* ``generative`` (MGD's ``is_conv`` path): a random spatial mask on the student only (drawn as MGD draws it, the
  masked ratio a parameter), then a per-level 3x3 conv -> ReLU -> 3x3 conv generator; with ``sse`` it is MGD.

``context`` and ``generative`` have parameters. Their size depends on the feature channels and the number of
levels, which only the distiller knows: it calls ``bind_features(channels, num_levels)`` on its losses right after
building them, so the parameters exist before the optimizer is built and train with the student (as the
methods' own loss modules and the channel adapters do). The implementations are the methods' own functions
(``distill_core.methods``), so a genome and the method compute the same numbers.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .methods.fgd import ContextBlock, channel_attention, spatial_attention, sqrt_weighted
from .methods.mgd import random_spatial_mask
from .methods.pkd import channel_standardise
from .registry import TRANSFORMS
from .transforms import Transform


def _require_maps(x: Tensor, op: str) -> None:
    if x.dim() != 4:
        raise ValueError(f'{op} needs N x C x H x W feature maps (put it in the first cascade slot), '
                         f'got shape {tuple(x.shape)}')


@TRANSFORMS.register_module(name='channel_standardize')
class ChannelStandardize(Transform):
    """PKD's normalisation: ``(x - mean_c) / (std_c + 1e-6)``, statistics of channel c over N and every position
    (unbiased std). Differs from ``batchnorm`` (biased variance, eps inside the root) as PKD differs from it."""

    def forward(self, x: Tensor) -> Tensor:
        return channel_standardise(x)


class _TeacherAttentionOp(Transform):
    def __init__(self, temperature: float = 0.5):
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f'attention temperature must be > 0, got {temperature}')
        self.temperature = float(temperature)

    def attention(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """FGD's ``(A_sp, A_ch)``: ``N x 1 x H x W`` and ``N x C x 1 x 1``."""
        return spatial_attention(x, self.temperature), channel_attention(x, self.temperature)


@TRANSFORMS.register_module(name='teacher_att')
class TeacherAttention(_TeacherAttentionOp):
    """FGD's focal weighting: both sides times ``sqrt(A_sp(t) * A_ch(t))`` (then ``sqrt(mask)`` where the input
    has GT masks: ``forward_masked``), so a squared distance is weighted by the teacher's attention (x mask)."""

    def forward(self, x: Tensor) -> Tensor:
        raise ValueError('teacher_att weights a (student, teacher) pair by the teacher\'s attention; it has no '
                         'single-tensor form')

    def forward_pair(self, student: Tensor, teacher: Tensor) -> Tuple[Tensor, Tensor]:
        return self.forward_masked(student, teacher, None)

    def forward_masked(self, student: Tensor, teacher: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """The pair weighted by the attention of the UNMASKED teacher, then by ``sqrt(mask)`` (FGD's order)."""
        _require_maps(teacher, 'teacher_att')
        weights = self.attention(teacher) + ((mask,) if mask is not None else ())
        return sqrt_weighted(student, teacher, *weights)


@TRANSFORMS.register_module(name='attention_maps')
class AttentionMaps(_TeacherAttentionOp):
    """``x -> [A_ch(x), A_sp(x)]`` flattened to ``N x (C + H*W)`` (FGD's attention term compares these)."""

    def forward(self, x: Tensor) -> Tensor:
        _require_maps(x, 'attention_maps')
        spatial, channel = self.attention(x)
        return torch.cat([channel.flatten(1), spatial.flatten(1)], 1)


class LevelModules(Transform):
    """An op with trainable modules, one set per feature level (FPN level, or pair index of an input), built by
    ``bind_features`` once the distiller knows the channels. ``forward_pair`` takes the pair's ``level``."""
    learnable = True
    per_level = True

    def __init__(self):
        super().__init__()
        self.levels = nn.ModuleList()

    def bind_features(self, channels: int, num_levels: int) -> None:
        if len(self.levels) == num_levels:
            return
        self.levels = nn.ModuleList(self.build_level(int(channels)) for _ in range(int(num_levels)))

    def build_level(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def level_module(self, level: int) -> nn.Module:
        if not len(self.levels):
            raise ConfigError(f'the {type(self).__name__} op has trainable parts sized by the feature channels: '
                              'build its loss inside DetectionDistiller (or call bind_features(channels, levels))')
        if not 0 <= level < len(self.levels):
            raise ValueError(f'{type(self).__name__}: level {level} outside the {len(self.levels)} bound levels')
        return self.levels[level]

    def forward(self, x: Tensor) -> Tensor:
        raise ValueError(f'{type(self).__name__} acts on a (student, teacher) pair of one level')


@TRANSFORMS.register_module(name='context')
class GlobalContext(LevelModules):
    """FGD's global relation: ``(R_s(s), R_t(t))`` with ``R(F) = F + channel_add(attention-pooled context)``, a
    trainable block per side and level (the teacher's block trains too; its last conv starts at zero, so the
    op starts as the identity)."""

    def build_level(self, channels: int) -> nn.Module:
        return nn.ModuleDict({'student': ContextBlock(channels), 'teacher': ContextBlock(channels)})

    def forward_pair(self, student: Tensor, teacher: Tensor, level: int = 0) -> Tuple[Tensor, Tensor]:
        _require_maps(student, 'context')
        blocks = self.level_module(level)
        return blocks['student'](student), blocks['teacher'](teacher)


@TRANSFORMS.register_module(name='generative')
class MaskedGeneration(LevelModules):
    """MGD: the student with a ``ratio`` of its positions zeroed (one mask for all channels, drawn as MGD draws
    it) through a per-level ``conv3x3 -> ReLU -> conv3x3`` generator; the teacher unchanged."""
    stochastic = True

    def __init__(self, ratio: float = 0.65):
        super().__init__()
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f'generative: mask ratio must be in [0, 1], got {ratio}')
        self.ratio = float(ratio)

    def build_level(self, channels: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                             nn.Conv2d(channels, channels, 3, padding=1))

    def forward_pair(self, student: Tensor, teacher: Tensor, level: int = 0) -> Tuple[Tensor, Tensor]:
        _require_maps(student, 'generative')
        generator = self.level_module(level)
        n, _, h, w = student.shape
        return generator(student * random_spatial_mask(n, h, w, self.ratio, student.device)), teacher
