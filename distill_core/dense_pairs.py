"""Dense responses of a teacher and a student head at matching positions, for heterogeneous pairs.

Each side is read with its own family (``families.py``). Two heads' maps match where their levels have the same
stride (same grid on the same input): levels without a partner are left out (RPN P2-P6 vs RetinaNet P3-P7 compare
P3-P6). Where the heads put a different number of priors at a position (RetinaNet's 9 anchors vs FCOS's one point),
both sides are reduced to one value per position: class probabilities by ``max`` or ``mean`` over the priors,
boxes by each side's own most confident prior. A homogeneous pair (same strides, same priors) is returned as is.

A one-stage student with a two-stage teacher has no dense map to compare with the RPN's objectness; its class
knowledge is the teacher's RoI head classifying the student's most confident boxes instead.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .context import DistillContext
from .errors import ConfigError
from .families import DenseBoxes, DetectorFamily, flat_levels
from .levels import LevelPair, fpn_strides, pair_levels

PRIOR_REDUCTIONS = ('max', 'mean')


def head_level_pairs(ctx: DistillContext) -> List[LevelPair]:
    """The dense heads' levels of equal stride (student index, teacher index); one to one where unknown."""
    s_strides, t_strides = fpn_strides(ctx.student), fpn_strides(ctx.teacher)
    if s_strides is None or t_strides is None:
        return [LevelPair(i, i, 0.0) for i in range(len(ctx.all_teacher_feats))]
    return pair_levels(s_strides, t_strides, 'stride')[0]


def _classes_per_prior(ctx: DistillContext, family: DetectorFamily, teacher_family: DetectorFamily) -> int:
    k_s = family.num_classes_per_prior(family.dense_head(ctx.student))
    k_t = teacher_family.num_classes_per_prior(teacher_family.dense_head(ctx.teacher))
    if k_s != k_t:
        raise ConfigError(f'dense responses: the student head ({family.name}) scores {k_s} classes per prior, the '
                          f'teacher head ({teacher_family.name}) {k_t}: their class maps cannot be compared')
    return k_s


def per_position(probs: Tensor, classes: int, reduce: str) -> Tensor:
    """``N x (A*K) x H x W`` probabilities -> ``N x K x H x W``, reduced over the A priors of each position
    (channel ``a * K + k``, MMDetection's layout)."""
    n, _, h, w = probs.shape
    grouped = probs.view(n, -1, classes, h, w)
    return grouped.amax(1) if reduce == 'max' else grouped.mean(1)


def class_probability_pairs(ctx: DistillContext, family: DetectorFamily, teacher_family: DetectorFamily,
                            reduce: str = 'max') -> List[Tuple[Tensor, Tensor]]:
    """(student, teacher) sigmoid class maps of every level pair, reduced per position where prior counts differ."""
    if reduce not in PRIOR_REDUCTIONS:
        raise ConfigError(f'logits: prior_reduce must be one of {list(PRIOR_REDUCTIONS)}, got {reduce!r}')
    classes = _classes_per_prior(ctx, family, teacher_family)
    s_maps = family.class_maps(ctx.student_head_outputs)
    t_maps = teacher_family.class_maps(ctx.teacher_head_outputs)
    pairs = []
    for pair in head_level_pairs(ctx):
        s, t = s_maps[pair.student].sigmoid(), t_maps[pair.teacher].sigmoid()
        if s.shape[1] != t.shape[1]:
            s, t = per_position(s, classes, reduce), per_position(t, classes, reduce)
        pairs.append((s, t))
    return pairs


def _level_spans(maps: Sequence[Tensor], classes: int) -> List[Tuple[int, int, int]]:
    """(offset, positions, priors) of each level in the flat ``DenseBoxes`` order."""
    spans, offset = [], 0
    for m in maps:
        positions, priors = m.shape[-2] * m.shape[-1], m.shape[1] // classes
        spans.append((offset, positions, priors))
        offset += positions * priors
    return spans


def _take(boxes: DenseBoxes, span: Tuple[int, int, int], one_per_position: bool) -> DenseBoxes:
    """One level of flat dense boxes; with ``one_per_position``, each position's most confident prior."""
    offset, positions, priors = span
    level = slice(offset, offset + positions * priors)
    b, scores, strides = boxes.boxes[:, level], boxes.scores[:, level], boxes.strides[level]
    dist = boxes.distributions[:, level] if boxes.distributions is not None else None
    if not one_per_position or priors == 1:
        return DenseBoxes(b, scores, strides, dist)
    n = b.shape[0]
    best = scores.view(n, positions, priors).argmax(-1).detach()          # N x positions
    index = (torch.arange(positions, device=b.device) * priors).unsqueeze(0) + best
    gathered = DenseBoxes(b.gather(1, index.unsqueeze(-1).expand(-1, -1, 4)), scores.gather(1, index),
                          strides[::priors])
    if dist is not None:
        gathered.distributions = dist.gather(1, index.view(n, -1, 1, 1).expand(-1, -1, *dist.shape[2:]))
    return gathered


def aligned_dense_boxes(ctx: DistillContext, family: DetectorFamily, teacher_family: DetectorFamily,
                        student: DenseBoxes, teacher: DenseBoxes) -> Tuple[DenseBoxes, DenseBoxes]:
    """Student and teacher dense boxes restricted to the level pairs, position for position (one prior per
    position where the prior counts differ)."""
    classes = _classes_per_prior(ctx, family, teacher_family)
    s_spans = _level_spans(family.class_maps(ctx.student_head_outputs), classes)
    t_spans = _level_spans(teacher_family.class_maps(ctx.teacher_head_outputs), classes)
    pairs = head_level_pairs(ctx)
    if len(pairs) == len(s_spans) == len(t_spans) and all(p.student == p.teacher for p in pairs) and \
            [s[2] for s in s_spans] == [t[2] for t in t_spans]:
        return student, teacher   # same levels and priors: the flat orders already match
    s_parts, t_parts = [], []
    for pair in pairs:
        s_span, t_span = s_spans[pair.student], t_spans[pair.teacher]
        reduce = s_span[2] != t_span[2]
        s_parts.append(_take(student, s_span, reduce))
        t_parts.append(_take(teacher, t_span, reduce))
    return _cat(s_parts), _cat(t_parts)


def _cat(parts: Sequence[DenseBoxes]) -> DenseBoxes:
    dist = None if parts[0].distributions is None else torch.cat([p.distributions for p in parts], 1)
    return DenseBoxes(torch.cat([p.boxes for p in parts], 1), torch.cat([p.scores for p in parts], 1),
                      torch.cat([p.strides for p in parts]), dist)


def teacher_classified_boxes(ctx: DistillContext, family: DetectorFamily, teacher_family: DetectorFamily,
                             max_per_image: Optional[int]) -> Tuple[Tensor, Tensor]:
    """A one-stage student's class probabilities at its ``max_per_image`` most confident positions per image, and
    the two-stage teacher's RoI head classifying the boxes the student decodes there (its softmax over the
    foreground classes: the probability of each class, as the student's sigmoids)."""
    head = family.dense_head(ctx.student)
    outputs = ctx.student_head_outputs
    classes = family.num_classes_per_prior(head)
    probs = flat_levels(family.class_maps(outputs), classes).sigmoid()          # N x P x K, with gradient
    with torch.no_grad():
        dense = family.dense_boxes(head, outputs)
        count = dense.scores.shape[1] if max_per_image is None else min(int(max_per_image), dense.scores.shape[1])
        top = dense.scores.topk(count, dim=1).indices                            # N x R
        boxes = dense.boxes.gather(1, top.unsqueeze(-1).expand(-1, -1, 4))
        # an untrained head may decode inverted or out-of-image boxes: order the corners and clip to the input
        height, width = ctx.inputs.shape[-2:]
        lo, hi = torch.minimum(boxes[..., :2], boxes[..., 2:]), torch.maximum(boxes[..., :2], boxes[..., 2:])
        limit = boxes.new_tensor([width, height])
        boxes = torch.cat([torch.minimum(lo.clamp(min=0), limit), torch.minimum(hi.clamp(min=0), limit)], -1)
        image = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype).view(-1, 1, 1).expand(-1, count, 1)
        rois = torch.cat([image, boxes], -1).reshape(-1, 5)
    student = probs.gather(1, top.unsqueeze(-1).expand(-1, -1, classes)).reshape(-1, classes)
    teacher_logits = teacher_family.roi_class_logits(ctx, rois)
    if teacher_logits.shape[1] != classes + 1:
        raise ConfigError(f'logits: the teacher RoI head ({teacher_family.name}) scores '
                          f'{teacher_logits.shape[1] - 1} classes, the student head ({family.name}) {classes}')
    return student, F.softmax(teacher_logits, -1)[:, :classes]
