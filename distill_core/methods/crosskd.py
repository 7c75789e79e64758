"""CrossKD (CVPR 2024): distil the teacher's predictions into the student's head features crossed into the
teacher's head (``distill_core/cross_head.py``; crosskd_bckd.md).

The crossed predictions ``r`` (student towers up to the cross point, the teacher's head after it) are pulled
towards the teacher's own predictions ``t``; the student's own predictions are never distilled and get only
their detection losses. With ``p = sigmoid(t)`` (detached), ``w`` the student assigner's label weights:

* classification: ``cls_weight * sum_a w_a sum_c BCEwithlogits(r_ac, p_ac) * |sigmoid(r_ac) - p_ac|^beta / Z``;
* regression, weight per position ``v_a = sigmoid(max_c t_ac)`` (0 where ``w_a = 0``):
  - ``kl`` (GFL): ``reg_weight * sum_a v_a sum_side KL(softmax(t) || softmax(r)) / 4 / sum_a v_a``;
  - ``giou`` (RetinaNet): both decoded with the head's coder at its anchors, ``reg_weight * sum_a v_a (1 - GIoU) / Z``;
  - ``iou`` (FCOS): decoded point distances, ``reg_weight * sum_a v_a (-log IoU) / Z`` on every point.

``Z`` is the number of positives (GFL, RetinaNet; at least 1), FCOS: the sum of the positives' centerness
targets (at least 1e-6), with no label weights (every point). Published weights: GFL cls 1, KL 4; RetinaNet 1, 1;
FCOS 0.4, 0.75. Cross point: 3 of 4 stacked convs (GFL, RetinaNet), 2 of 4 (FCOS); ``cross_index='auto'`` applies
that rule to the head's depth (before the last conv; half the tower), which on the demo heads' 2 stacked convs is 1.
Not ported: ATSS (no ATSS family here) and its centerness term.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..context import DistillContext
from ..cross_head import CrossIndex, crossed_outputs, recorder_points, resolve_cross_index
from ..errors import ConfigError
from ..families import DetectorFamily, family_of, flat_levels
from .dense_kd import box_overlap_loss, check_family, quality_focal_bce, side_kl, step_targets

# family -> (regression loss, classification weight, regression weight) of the released configs
PUBLISHED = {'gfl': ('kl', 1.0, 4.0), 'retinanet': ('giou', 1.0, 1.0), 'fcos': ('iou', 0.4, 0.75)}


@MODELS.register_module()
class CrossKDLoss(nn.Module):
    """CrossKD as a step-wise distillation loss: ``dict(name='crosskd', loss=dict(type='CrossKDLoss', ...))``.

    Args:
        cross_index: tower position where the student crosses into the teacher head (0 = FPN level); 'auto' =
            the published rule for the family.
        reg_loss: 'kl' (GFL only), 'giou' or 'iou'; None = the family's published choice.
        cls_weight, reg_weight: None = the family's published weights.
        beta: exponent of the quality-focal modulation.
    Returns ``{'loss_cls': ..., 'loss_reg': ...}``.
    """

    def __init__(self, cross_index: CrossIndex = 'auto', reg_loss: Optional[str] = None,
                 cls_weight: Optional[float] = None, reg_weight: Optional[float] = None, beta: float = 1.0):
        super().__init__()
        if reg_loss not in (None, 'kl', 'giou', 'iou'):
            raise ConfigError(f'CrossKDLoss: reg_loss {reg_loss!r} must be kl, giou or iou')
        self.cross_index, self.reg_loss = cross_index, reg_loss
        self.cls_weight, self.reg_weight, self.beta = cls_weight, reg_weight, float(beta)
        self._index: Optional[int] = None

    def student_recorders_for(self, student: nn.Module) -> Dict[str, str]:
        family = family_of(student)
        check_family(family, PUBLISHED, 'CrossKD')
        self._index = resolve_cross_index(family, family.dense_head(student), None, self.cross_index)
        if self.reg_loss == 'kl' and not family.has_distributions:
            raise ConfigError(f'CrossKDLoss: reg_loss "kl" needs box distributions (GFL); {family.name} has none')
        return recorder_points(student, self._index)

    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        family = family_of(ctx.student)
        if self._index is None:
            raise RuntimeError('CrossKDLoss runs inside DetectionDistiller (which asks for its recorders first)')
        index = resolve_cross_index(family, family.dense_head(ctx.student), family.dense_head(ctx.teacher),
                                    self._index)
        reg_loss, cls_weight, reg_weight = PUBLISHED[family.name]
        reg_loss = self.reg_loss or reg_loss
        cls_weight = cls_weight if self.cls_weight is None else self.cls_weight
        reg_weight = reg_weight if self.reg_weight is None else self.reg_weight
        crossed, teacher = crossed_outputs(ctx, family, index)
        return crosskd_terms(ctx, family, crossed, teacher, reg_loss, cls_weight, reg_weight, self.beta)


def crosskd_terms(ctx: DistillContext, family: DetectorFamily, crossed, teacher, reg_loss: str, cls_weight: float,
                  reg_weight: float, beta: float = 1.0) -> Dict[str, Tensor]:
    """CrossKD's two terms from the crossed and the teacher's head outputs (as the head's forward returns them)."""
    head = family.dense_head(ctx.teacher)
    classes = family.num_classes_per_prior(head)
    crossed_cls = flat_levels(family.class_maps(crossed), classes)          # N x P x C
    teacher_cls = flat_levels(family.class_maps(teacher), classes).detach()
    targets = step_targets(ctx, family)
    if targets.centerness is not None:   # FCOS: every point, normalised by the positives' centerness
        weights = torch.ones_like(targets.label_weights)
        norm = max(float(targets.centerness[targets.positives].sum()), 1e-6)
    else:
        weights, norm = targets.label_weights, targets.num_pos
    probs = teacher_cls.sigmoid()
    cls = (quality_focal_bce(crossed_cls, probs, beta) * weights.unsqueeze(-1)).sum() / norm
    reg_weights = probs.amax(-1) * (weights > 0)      # sigmoid(max t) = max sigmoid(t)
    if reg_loss == 'kl':
        crossed_boxes = family.dense_boxes(head, crossed)
        teacher_boxes = family.dense_boxes(head, teacher)
        kl = side_kl(crossed_boxes.distributions, teacher_boxes.distributions).sum(-1)   # N x P (4 sides)
        reg = (kl * reg_weights).sum() / 4.0 / reg_weights.sum().clamp(min=1e-6)
    else:
        crossed_boxes = family.dense_boxes(head, crossed).boxes
        teacher_boxes = family.dense_boxes(head, teacher).boxes.detach()
        reg = (box_overlap_loss(crossed_boxes, teacher_boxes, reg_loss) * reg_weights).sum() / norm
    return {'loss_cls': cls * cls_weight, 'loss_reg': reg * reg_weight}
