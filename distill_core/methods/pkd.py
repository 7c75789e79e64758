"""PKD (Pearson correlation KD, NeurIPS 2022; mmrazor's ``PKDLoss``) (methods.md §4).

Each feature is standardised per channel with statistics pooled over (N, H, W) (unbiased std, ``+1e-6`` on
the std); the loss is the MSE of the standardised maps divided by 2 (about ``1 - Pearson r``). No learnable
parts, no GT, no channel alignment (inside the distiller the student arrives adapted to the teacher).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn


def channel_standardise(feat: Tensor) -> Tensor:
    """``(F - mean_c) / (std_c + 1e-6)`` with per-channel statistics over N*H*W (unbiased std); any input
    ``N x C x ...`` (the search space's op applies it to flattened maps too)."""
    if feat.dim() < 2:
        raise ValueError(f'channel standardisation needs N x C x ... features, got shape {tuple(feat.shape)}')
    n, c = feat.shape[:2]
    flat = feat.transpose(0, 1).reshape(c, -1)
    flat = (flat - flat.mean(dim=-1, keepdim=True)) / (flat.std(dim=-1, keepdim=True) + 1e-6)
    return flat.reshape(c, n, *feat.shape[2:]).transpose(0, 1)


@MODELS.register_module()
class PKDLoss(nn.Module):
    """``loss_weight * sum_levels mse(norm(S), norm(T)) / 2``.

    Called per level as ``loss(student_feat, teacher_feat, data_samples)``; tuples of levels are summed too.
    resize_stu: when the heights differ, resize the student to the teacher (else the teacher to the student),
    bilinearly with ``align_corners=False`` (only the height is compared, as the reference).
    """

    def __init__(self, loss_weight: float = 1.0, resize_stu: bool = True):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.resize_stu = bool(resize_stu)

    def forward(self, student_feat: Union[Tensor, Sequence[Tensor]], teacher_feat: Union[Tensor, Sequence[Tensor]],
                data_samples: Optional[Sequence] = None) -> Tensor:
        students = (student_feat,) if isinstance(student_feat, Tensor) else tuple(student_feat)
        teachers = (teacher_feat,) if isinstance(teacher_feat, Tensor) else tuple(teacher_feat)
        if len(students) != len(teachers):
            raise ValueError(f'PKDLoss: {len(students)} student levels but {len(teachers)} teacher levels')
        loss = 0.0
        for s, t in zip(students, teachers):
            t = t.detach()
            if s.dim() != 4 or t.dim() != 4:
                raise ValueError(f'PKDLoss expects N x C x H x W features, got {tuple(s.shape)} and {tuple(t.shape)}')
            if s.shape[2] != t.shape[2]:
                if self.resize_stu:
                    s = F.interpolate(s, t.shape[2:], mode='bilinear', align_corners=False)
                else:
                    t = F.interpolate(t, s.shape[2:], mode='bilinear', align_corners=False)
            if s.shape != t.shape:
                raise ValueError(f'PKDLoss: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ; PKD has '
                                 'no channel alignment (use the distiller\'s adapt_channels)')
            loss = loss + F.mse_loss(channel_standardise(s), channel_standardise(t)) / 2
        return loss * self.loss_weight
