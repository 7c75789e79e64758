"""Terms shared by the prediction-mimicking distillers of dense heads (CrossKD, BCKD): the quality-focal binary
cross-entropy on class scores, box overlap losses on decoded boxes, the box-side KL of GFL's distributions, and
the step's assigner targets (computed once per step whichever loss asks first)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.structures.bbox import bbox_overlaps
from torch import Tensor

from ..context import DistillContext
from ..errors import ConfigError
from ..families import DenseTargets, DetectorFamily


def quality_focal_bce(logits: Tensor, target_probs: Tensor, beta: float = 1.0) -> Tensor:
    """Elementwise ``BCEwithlogits(x, p) * |sigmoid(x) - p|^beta`` (the modulating factor is not detached)."""
    loss = F.binary_cross_entropy_with_logits(logits, target_probs, reduction='none')
    return loss * (logits.sigmoid() - target_probs).abs().pow(beta) if beta else loss


def box_overlap_loss(pred: Tensor, target: Tensor, mode: str) -> Tensor:
    """Per-box ``1 - GIoU`` (mode ``giou``, eps 1e-7 as mmdet's GIoULoss) or ``-log IoU`` (mode ``iou``, IoU
    clamped at 1e-6 as mmdet's IoULoss in its default log mode), boxes ``[..., 4]`` xyxy."""
    if mode == 'giou':
        return 1 - bbox_overlaps(pred, target, mode='giou', is_aligned=True, eps=1e-7)
    if mode == 'iou':
        return -bbox_overlaps(pred, target, mode='iou', is_aligned=True).clamp(min=1e-6).log()
    raise ConfigError(f'box overlap loss: unknown mode {mode!r} (giou or iou)')


def side_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``KL(softmax(t) || softmax(s))`` over the last dim (GFL's bins of one box side), temperature 1."""
    log_q = F.log_softmax(student_logits, -1)
    log_p = F.log_softmax(teacher_logits.detach(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def step_targets(ctx: DistillContext, family: DetectorFamily) -> DenseTargets:
    """The student head's assigner targets for this step's maps (the assignment its own loss made: the same
    assigner on the same GT and priors), once per step."""
    def compute():
        head = family.dense_head(ctx.student)
        with torch.no_grad():
            return family.dense_targets(head, family.class_maps(ctx.student_head_outputs), ctx.data_samples)
    return ctx.cached('dense_targets', compute)


def levels_with_positives(targets: DenseTargets) -> Tensor:
    """N x P mask: 1 at the positions of levels that hold at least one positive in the batch."""
    per_level = torch.split(targets.positives, targets.level_sizes, dim=1)
    return torch.cat([torch.full_like(p, bool(p.any())) for p in per_level], 1).to(targets.label_weights.dtype)


def check_family(family: DetectorFamily, allowed, method: str) -> None:
    if family.name not in allowed:
        raise ConfigError(f'{method} is defined for dense heads of the families {sorted(allowed)}, not '
                          f'{family.name}')

