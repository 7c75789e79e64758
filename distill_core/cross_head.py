"""CrossKD's crossed head: the student's head-tower outputs at a cross point, aligned to the teacher's statistics,
run through the frozen teacher's remaining tower layers, predictors and scales.

Dense heads (GFL, RetinaNet, FCOS) have two towers (``cls_convs``, ``reg_convs``) of ``stacked_convs`` conv
modules. At cross point ``k`` (0 = the FPN level itself) each student tower output after ``k`` modules is
standardised per channel over (N, H, W) (unbiased std, student statistics not detached) and given the teacher's
mean and std at the same point, passed through a ReLU when ``k > 0``, then through the teacher's modules
``k..`` and predictors. The teacher's parameters are frozen (``requires_grad=False``) but the path is NOT under
no-grad: the distillation gradient flows through the teacher's layers into the student's first ``k`` tower
modules, its neck and backbone.

What "the tower output after k modules" is: the reference (CrossKD @87e156a) keeps the conv+norm result of module
``k-1`` and then applies the module's activation to it, but mmcv's ``ConvModule`` activation is an in-place ReLU,
so the kept tensor holds the activated values. We take the activated output, which is what the published numbers
were trained with (a ReLU after the alignment follows, as in the reference).

The student's tower outputs come from its own loss forward (forward hooks on its tower modules, installed by the
distiller through ``recorder_points``): no second student head pass. The teacher's towers run once per step for a
cross point and are shared by every student of the step (cache keys ``teacher_towers_*``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .context import DistillContext, dense_head_name
from .errors import ConfigError
from .families import DetectorFamily

TOWERS = ('cls_convs', 'reg_convs')
CrossIndex = Union[int, float, str, None]


def run_towers(head: nn.Module, cls_feat: Tensor, reg_feat: Tensor, start: int = 0,
               stop: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Both towers' modules ``start..stop-1`` (activations included), from the given inputs."""
    for conv in head.cls_convs[start:stop]:
        cls_feat = conv(cls_feat)
    for conv in head.reg_convs[start:stop]:
        reg_feat = conv(reg_feat)
    return cls_feat, reg_feat


def align_statistics(student: Tensor, teacher: Tensor) -> Tensor:
    """``(s - mean_s) / (std_s + 1e-6) * std_t + mean_t`` per channel, statistics over (N, H, W), unbiased std."""
    dims = (0, 2, 3)
    s_mean, s_std = student.mean(dims, keepdim=True), student.std(dims, keepdim=True)
    t_mean, t_std = teacher.mean(dims, keepdim=True), teacher.std(dims, keepdim=True)
    return (student - s_mean) / (s_std + 1e-6) * t_std + t_mean


def _channels_at(head: nn.Module, index: int) -> int:
    return head.in_channels if index == 0 else head.feat_channels


def resolve_cross_index(family: DetectorFamily, student_head: nn.Module, teacher_head: Optional[nn.Module],
                        index: CrossIndex) -> int:
    """The cross point as a tower position (``'auto'``/None: CrossKD's published rule for the family), checked
    against both heads (the teacher's only when given)."""
    if family.cross_problem is not None:
        raise ConfigError(f'cross-head distillation is not defined for {family.name}: {family.cross_problem}')
    depth = student_head.stacked_convs
    if index is None or index == 'auto':
        index = family.published_cross_index(student_head)
    if isinstance(index, bool) or not isinstance(index, (int, float)) or index != int(index) or \
            not 0 <= index <= depth:
        raise ConfigError(f'cross index {index!r}: expected "auto" or an integer in 0..{depth} (the student head '
                          f'has {depth} stacked convs)')
    index = int(index)
    if teacher_head is not None:
        problems = []
        if type(teacher_head) is not type(student_head):
            problems.append(f'head types {type(student_head).__name__} / {type(teacher_head).__name__}')
        if teacher_head.stacked_convs < index:
            problems.append(f'the teacher head has {teacher_head.stacked_convs} stacked convs')
        if _channels_at(student_head, index) != _channels_at(teacher_head, index):
            problems.append(f'{_channels_at(student_head, index)} student / {_channels_at(teacher_head, index)} '
                            f'teacher channels at the cross point')
        for attr in ('num_classes', 'num_base_priors'):
            if getattr(student_head, attr) != getattr(teacher_head, attr):
                problems.append(f'{attr} {getattr(student_head, attr)} / {getattr(teacher_head, attr)}')
        if problems:
            raise ConfigError(f'cannot cross the student head into the teacher head at index {index}: '
                              + '; '.join(problems))
    return index


def recorder_points(student: nn.Module, index: int) -> Dict[str, str]:
    """Student modules whose outputs the distiller records: the last tower module before the cross point."""
    if index == 0:
        return {}   # the FPN levels themselves: the context has them
    head = dense_head_name(student)
    return {_record_key(tower, index): f'{head}.{tower}.{index - 1}' for tower in TOWERS}


def _record_key(tower: str, index: int) -> str:
    return f'cross_head.{tower}.{index}'


def student_tower_outputs(ctx: DistillContext, family: DetectorFamily,
                          index: int) -> Tuple[List[Tensor], List[Tensor]]:
    """The student's cls and reg tower outputs at the cross point, per level: recorded during its own loss forward
    (``recorder_points``), else (a loss called outside the distiller) recomputed from its FPN levels, same values."""
    feats = list(ctx.raw_student_feats)
    if index == 0:
        return feats, feats
    recorded = [ctx.recorded.get(_record_key(tower, index)) or [] for tower in TOWERS]
    if all(len(calls) >= len(feats) for calls in recorded):
        return tuple([out for _args, out in calls[:len(feats)]] for calls in recorded)
    head = family.dense_head(ctx.student)
    pairs = [run_towers(head, feat, feat, 0, index) for feat in feats]
    return [c for c, _ in pairs], [r for _, r in pairs]


@dataclass
class TeacherTowers:
    """The teacher head on its own features: tower outputs at the cross point and its predictions."""
    cls_at_cross: List[Tensor]
    reg_at_cross: List[Tensor]
    outputs: Tuple[List[Tensor], ...]    # as the head's forward returns them (one list per output kind)


def teacher_towers(ctx: DistillContext, family: DetectorFamily, index: int) -> TeacherTowers:
    """Computed once per step and cross point, without gradient; its predictions also answer
    ``ctx.teacher_head_outputs`` (the same computation as the head's forward)."""
    def run():
        head = family.dense_head(ctx.teacher)
        held_cls, held_reg, per_level = [], [], []
        with torch.no_grad():
            for level, feat in enumerate(ctx.teacher_feats):
                cls_feat, reg_feat = run_towers(head, feat, feat, 0, index)
                held_cls.append(cls_feat)
                held_reg.append(reg_feat)
                per_level.append(family.predict_level(head, *run_towers(head, cls_feat, reg_feat, index), level))
        return TeacherTowers(held_cls, held_reg, tuple(list(kind) for kind in zip(*per_level)))
    towers = ctx.cached(f'teacher_towers_{index}', run)
    ctx.cache.setdefault('teacher_head_outputs', towers.outputs)
    return towers


def crossed_outputs(ctx: DistillContext, family: DetectorFamily,
                    index: int) -> Tuple[Tuple[List[Tensor], ...], Tuple[List[Tensor], ...]]:
    """(crossed predictions, the teacher's own predictions), each as the head's forward returns them. Cached per
    step and cross point, so CrossKD and a searched ``cross_head`` term share one crossed pass."""
    def run():
        teacher = teacher_towers(ctx, family, index)
        head = family.dense_head(ctx.teacher)
        student_cls, student_reg = student_tower_outputs(ctx, family, index)
        per_level = []
        for level in range(ctx.num_levels):
            cls_feat = align_statistics(student_cls[level], teacher.cls_at_cross[level])
            reg_feat = align_statistics(student_reg[level], teacher.reg_at_cross[level])
            if index > 0:   # the activation of the student's module index-1, after the alignment
                cls_feat, reg_feat = F.relu(cls_feat), F.relu(reg_feat)
            per_level.append(family.predict_level(head, *run_towers(head, cls_feat, reg_feat, index), level))
        return tuple(list(kind) for kind in zip(*per_level))
    return ctx.cached(f'crossed_outputs_{index}', run), teacher_towers(ctx, family, index).outputs

