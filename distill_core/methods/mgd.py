"""MGD (Masked Generative Distillation, ECCV 2022) on one FPN level (methods.md §3).

A random spatial mask (probability ``lambda_mgd`` of masking a position, shared by all channels) removes
part of the aligned student feature; a small generation block must rebuild the teacher's full feature:
``L = alpha_mgd * sum((G(S' * M) - T)^2) / N``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from .fgd import align_student, build_align


def random_spatial_mask(n: int, h: int, w: int, lambda_mgd: float, device) -> Tensor:
    """``N x 1 x H x W`` keep-mask: 0 where ``u > 1 - lambda_mgd``, else 1.

    Drawn from the default CPU generator and then moved, as the reference does, so a seeded run gives the
    same mask on any device.
    """
    u = torch.rand((n, 1, h, w))
    return torch.where(u > 1 - lambda_mgd, 0.0, 1.0).to(device)


@MODELS.register_module()
class MGDLoss(nn.Module):
    """MGD at one FPN level: ``loss(student_feat, teacher_feat, data_samples=None, mask=None) -> scalar``.

    Args:
        student_channels / teacher_channels: an ``align`` 1x1 conv is built when they differ.
        alpha_mgd: loss weight. lambda_mgd: probability that a spatial position is masked.
    ``mask`` (``N x 1 x H x W``, 1 = keep) replaces the random draw (tests, reproducibility).
    """

    def __init__(self, student_channels: int, teacher_channels: int, alpha_mgd: float = 0.00002,
                 lambda_mgd: float = 0.65):
        super().__init__()
        if not 0.0 <= float(lambda_mgd) <= 1.0:
            raise ValueError(f'MGDLoss: lambda_mgd={lambda_mgd} must be a probability in [0, 1]')
        self.student_channels, self.teacher_channels = int(student_channels), int(teacher_channels)
        self.alpha_mgd, self.lambda_mgd = float(alpha_mgd), float(lambda_mgd)
        self.align = build_align(self.student_channels, self.teacher_channels)
        c = self.teacher_channels
        self.generation = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, kernel_size=3, padding=1))

    def forward(self, student_feat: Tensor, teacher_feat: Tensor, data_samples: Optional[Sequence] = None,
                mask: Optional[Tensor] = None) -> Tensor:
        s = align_student(self.align, student_feat, self.student_channels, self.teacher_channels, 'MGDLoss')
        t = teacher_feat.detach()
        if s.shape != t.shape:
            raise ValueError(f'MGDLoss: student {tuple(s.shape)} and teacher {tuple(t.shape)} shapes differ')
        n, _, h, w = t.shape
        if mask is None:
            mask = random_spatial_mask(n, h, w, self.lambda_mgd, s.device)
        generated = self.generation(s * mask)
        return self.alpha_mgd * (generated - t).pow(2).sum() / n
