"""Which student FPN level is distilled against which teacher level (heterogeneous pairs).

Teacher and student of different families need not give the same levels: Faster/Cascade/Mask R-CNN give P2-P6
(strides 4-64), RetinaNet and FCOS P3-P7 (8-128). Two rules (``DetectionDistiller(level_pairing=...)``):

* ``'stride'`` (default): a student level is paired with the teacher level of the same stride; a level without a
  partner is skipped (said once in the log), never misaligned. P2-P6 vs P3-P7 pairs P3-P6.
* ``'index'``: PKD's published heterogeneous recipe (mmrazor pairs the two neck tuples position by position, e.g.
  Swin Mask R-CNN P2-P5 with RetinaNet P3-P6) over the common number of levels; the student map is bilinearly
  resized to the teacher's size where they differ, as PKD's loss does.

A level pairing is a list of ``LevelPair``; the distiller's level-wise losses, adapters and feature knowledge
inputs all index the pairs, so a homogeneous pair (every stride shared) keeps its level indices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError

LEVEL_PAIRINGS = ('stride', 'index')


@dataclass(frozen=True)
class LevelPair:
    student: int          # index into the student's neck outputs
    teacher: int          # index into the teacher's neck outputs
    stride: float         # the teacher level's stride: the distilled maps' stride (the student is resized to it)


def fpn_strides(detector: nn.Module) -> Optional[List[float]]:
    """The stride of each neck output: the dense head's prior strides (one per FPN level), or None where the
    detector has no prior generator to read them from."""
    from .context import dense_head_name
    try:
        head = getattr(detector, dense_head_name(detector))
    except ValueError:
        return None
    strides = getattr(getattr(head, 'prior_generator', None), 'strides', None)
    if strides is None:
        return None
    return [float(s[0] if isinstance(s, (tuple, list)) else s) for s in strides]


def strides_from_sizes(feats: Sequence[Tensor], input_width: int) -> List[float]:
    """Strides of feature maps from the padded input width (powers of two)."""
    return [float(2 ** round(math.log2(input_width / f.shape[-1]))) for f in feats]


def pair_levels(student_strides: Sequence[float], teacher_strides: Sequence[float],
                rule: str = 'stride') -> Tuple[List[LevelPair], List[str]]:
    """The level pairs under ``rule``, and what was left out (one phrase per skipped level)."""
    if rule not in LEVEL_PAIRINGS:
        raise ConfigError(f'level_pairing must be one of {list(LEVEL_PAIRINGS)}, got {rule!r}')
    if rule == 'index':
        common = min(len(student_strides), len(teacher_strides))
        pairs = [LevelPair(i, i, float(teacher_strides[i])) for i in range(common)]
        skipped = [f'student level {i} (stride {student_strides[i]:g})' for i in range(common, len(student_strides))]
        skipped += [f'teacher level {i} (stride {teacher_strides[i]:g})' for i in range(common, len(teacher_strides))]
        return pairs, skipped
    teacher_index = {float(s): i for i, s in enumerate(teacher_strides)}
    pairs = [LevelPair(i, teacher_index[float(s)], float(s)) for i, s in enumerate(student_strides)
             if float(s) in teacher_index]
    paired = {float(p.stride) for p in pairs}
    skipped = [f'student stride {s:g}' for s in student_strides if float(s) not in paired]
    skipped += [f'teacher stride {s:g}' for s in teacher_strides if float(s) not in paired]
    if not pairs:
        raise ConfigError(f'no FPN level of the student (strides {list(student_strides)}) has the stride of a '
                          f'teacher level ({list(teacher_strides)}): use level_pairing="index"')
    return pairs, skipped


def describe(pairs: Sequence[LevelPair], skipped: Sequence[str], rule: str) -> str:
    """One log line: the pairing and what it skips."""
    shown = ', '.join(f's{p.student}->t{p.teacher}' for p in pairs)
    line = f'[distill] FPN levels paired by {rule}: {shown}'
    return line + (f'; not distilled: {", ".join(skipped)}' if skipped else '')


def resized_to(student: Tensor, teacher: Tensor) -> Tensor:
    """The student map bilinearly resized to the teacher map's size (PKD's rule), unchanged if they agree."""
    if student.shape[-2:] == teacher.shape[-2:]:
        return student
    return F.interpolate(student, size=teacher.shape[-2:], mode='bilinear', align_corners=False)
