"""BCKD (ICCV 2023): binary classification distillation and IoU-based localization distillation on the
student's own dense predictions (crosskd_bckd.md; reference: an ``LDHead`` on GFL).

With ``s``, ``t`` the student's and the teacher's class logits, ``p = sigmoid(t)`` (detached), ``w`` the student
assigner's label weights and ``N_pos`` its number of positives (at least 1):

* classification: ``cls_weight * sum_a w_a sum_c BCEwithlogits(s_ac, p_ac) * |p_ac - sigmoid(s_ac)|^beta / N_pos``;
* localization: every position's box decoded from both heads' predictions (teacher detached), in stride units,
  weighted by ``w_a * max_c |sigmoid(t_ac) - sigmoid(s_ac)|`` (detached):
  ``loc_weight * sum_a weight_a (1 - GIoU) / N_pos``.

A level without positives in the batch contributes nothing (the reference computes both terms only inside its
per-level ``if len(pos_inds) > 0``). Published: GFL, cls 1.0, GIoU 4.0, beta 1; the terms need only decoded
boxes and the assigner, so RetinaNet and FCOS heads are accepted too (no published weights there).

Not a searched genome: the space's ``logits`` and ``localization`` inputs normalise by element counts (means),
see every position alike and pick teacher-confident positions for boxes, whereas BCKD needs the assigner's label
weights, the positives' count as normaliser, the per-level positive gate and a per-position weight from the
student-teacher score gap; none of these is an input, transform or distance of the space.
"""
from __future__ import annotations

from typing import Dict

from mmdet.registry import MODELS
from torch import Tensor, nn

from ..context import DistillContext
from ..families import family_of, flat_levels
from .dense_kd import box_overlap_loss, check_family, levels_with_positives, quality_focal_bce, step_targets


@MODELS.register_module()
class BCKDLoss(nn.Module):
    """BCKD as a step-wise distillation loss: ``dict(name='bckd', loss=dict(type='BCKDLoss'))``; returns
    ``{'loss_cls': ..., 'loss_loc': ...}``."""

    families = ('gfl', 'retinanet', 'fcos')

    def __init__(self, cls_weight: float = 1.0, loc_weight: float = 4.0, beta: float = 1.0):
        super().__init__()
        self.cls_weight, self.loc_weight, self.beta = float(cls_weight), float(loc_weight), float(beta)

    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        family = family_of(ctx.student)
        check_family(family, self.families, 'BCKD')
        s_head, t_head = family.dense_head(ctx.student), family.dense_head(ctx.teacher)
        student, teacher = ctx.student_head_outputs, ctx.teacher_head_outputs
        classes = family.num_classes_per_prior(s_head)
        s_cls = flat_levels(family.class_maps(student), classes)               # N x P x C
        t_probs = flat_levels(family.class_maps(teacher), classes).detach().sigmoid()
        targets = step_targets(ctx, family)
        weights = targets.label_weights * levels_with_positives(targets)
        cls = (quality_focal_bce(s_cls, t_probs, self.beta) * weights.unsqueeze(-1)).sum() / targets.num_pos
        student_boxes = family.dense_boxes(s_head, student)
        teacher_boxes = ctx.cached('teacher_dense_boxes', lambda: family.dense_boxes(t_head, teacher))
        stride = student_boxes.strides.view(1, -1, 1)
        gap = (t_probs - s_cls.detach().sigmoid()).abs().amax(-1)
        loc = (box_overlap_loss(student_boxes.boxes / stride, teacher_boxes.boxes.detach() / stride, 'giou')
               * (weights * gap)).sum() / targets.num_pos
        return {'loss_cls': cls * self.cls_weight, 'loss_loc': loc * self.loc_weight}
