"""FGD (Focal and Global Knowledge Distillation, CVPR 2022) on one FPN level.

``L = alpha * L_fg + beta * L_bg + gamma * L_att + lambda * L_rela`` (methods.md §2):

* focal imitation: squared error weighted by the TEACHER's spatial and channel attention and by the GT
  foreground / background masks (§2.3, ``distill_core.masks``);
* attention imitation: L1 between student and teacher spatial and channel attention;
* global relation: MSE between GcBlock-style context-augmented features, with a student-side and a trainable
  teacher-side context module whose last conv starts at zero (so the term starts as plain MSE).

The attention helpers, the context block and the masks step input are reused by GKD (``gkd.py``).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..masks import fg_bg_masks


def spatial_attention(feat: Tensor, temp: float) -> Tensor:
    """``H*W * softmax_hw(mean_c |F| / temp)``: ``N x 1 x H x W``, sums to ``H*W`` per image."""
    n, _, h, w = feat.shape
    pooled = feat.abs().mean(dim=1, keepdim=True)
    return (h * w * F.softmax((pooled / temp).view(n, -1), dim=1)).view(n, 1, h, w)


def channel_attention(feat: Tensor, temp: float) -> Tensor:
    """``C * softmax_c(mean_hw |F| / temp)``: ``N x C x 1 x 1``, sums to ``C`` per image."""
    n, c = feat.shape[:2]
    pooled = feat.abs().mean(dim=2).mean(dim=2)   # H then W, as the reference (bitwise parity)
    return (c * F.softmax(pooled / temp, dim=1)).view(n, c, 1, 1)


class ContextBlock(nn.Module):
    """GcBlock global context: ``F + channel_add(sum_p F[:, :, p] * softmax_p(conv_mask(F))[p])``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        hidden = channels // 2
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1))
        self.init_weights()

    def init_weights(self) -> None:
        # FGD's initialisation: Kaiming-normal (fan_in, ReLU gain) mask conv, zero last conv -> identity at start
        nn.init.kaiming_normal_(self.conv_mask.weight, mode='fan_in', nonlinearity='relu')
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, feat: Tensor) -> Tensor:
        n, c, h, w = feat.shape
        weights = F.softmax(self.conv_mask(feat).view(n, 1, h * w), dim=2)          # N x 1 x HW
        context = torch.matmul(feat.view(n, 1, c, h * w), weights.view(n, 1, h * w, 1)).view(n, c, 1, 1)
        return feat + self.channel_add(context)


def build_align(student_channels: int, teacher_channels: int) -> Optional[nn.Conv2d]:
    """The published methods' 1x1 student->teacher channel alignment, only when the channels differ."""
    return nn.Conv2d(student_channels, teacher_channels, 1) if student_channels != teacher_channels else None


def align_student(align: Optional[nn.Module], student_feat: Tensor, student_channels: int,
                  teacher_channels: int, method: str) -> Tensor:
    """Map the student feature to the teacher's channels with the loss's own ``align`` conv.

    Inside ``DetectionDistiller`` (``adapt_channels=True``) the feature arrives already adapted to the
    teacher's channels; it is then used as is. Called directly (parity), it has ``student_channels``.
    """
    channels = student_feat.shape[1]
    if channels == teacher_channels:
        return student_feat
    if align is not None and channels == student_channels:
        return align(student_feat)
    raise ValueError(f'{method}: student feature has {channels} channels, expected student_channels='
                     f'{student_channels} or teacher_channels={teacher_channels}')


def gt_masks_step_input(ctx, level: int) -> Tuple[Tensor, Tensor]:
    """FGD fg/bg masks for ``level``, computed once per step and shared by every loss that asks."""
    feat = ctx.teacher_feats[level]
    hw = tuple(feat.shape[-2:])
    return ctx.cached(('fg_bg_masks', hw),
                      lambda: fg_bg_masks(ctx.gt_bboxes, ctx.img_shapes, hw))


def masks_from_samples(data_samples, feat: Tensor, masks: Optional[Tuple[Tensor, Tensor]]):
    if masks is not None:
        return masks
    if data_samples is None:
        raise ValueError('GT masks need data_samples (gt_instances.bboxes, metainfo img_shape) or masks=')
    boxes = [s.gt_instances.bboxes.to(feat.device) for s in data_samples]
    shapes = [tuple(s.metainfo['img_shape'][:2]) for s in data_samples]
    return fg_bg_masks(boxes, shapes, tuple(feat.shape[-2:]))


def sqrt_weighted(student: Tensor, teacher: Tensor, *weights: Tensor) -> Tuple[Tensor, Tensor]:
    """Both operands multiplied by the ``sqrt`` of each weight in turn (the reference's order), so that a
    squared error of the pair is weighted by the product of the weights."""
    for weight in weights:
        root = weight.sqrt()
        student, teacher = student * root, teacher * root
    return student, teacher


def weighted_sq_error(student: Tensor, teacher: Tensor, *weights: Tensor) -> Tensor:
    """``sum(prod(weights) * (S - T)^2) / N`` in the reference's order: ``sqrt_weighted``, then a summed squared
    error (bitwise parity with FGD)."""
    student, teacher = sqrt_weighted(student, teacher, *weights)
    return (student - teacher).pow(2).sum() / student.shape[0]


def attention_loss(student: Tensor, teacher: Tensor, temp: float,
                   teacher_att: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    sp_t, ch_t = teacher_att if teacher_att is not None else (spatial_attention(teacher, temp),
                                                              channel_attention(teacher, temp))
    n = student.shape[0]
    return ((channel_attention(student, temp) - ch_t).abs().sum() / n +
            (spatial_attention(student, temp) - sp_t).abs().sum() / n)


@MODELS.register_module()
class FGDLoss(nn.Module):
    """FGD at one FPN level: ``loss(student_feat, teacher_feat, data_samples) -> scalar``.

    Args:
        student_channels / teacher_channels: FPN channels; an ``align`` 1x1 conv is built when they differ.
        temp: attention temperature. alpha_fgd / beta_fgd / gamma_fgd / lambda_fgd: weights of the fg,
        bg, attention and relation terms (class defaults of the reference).
        split_terms: return ``{'loss_fg', 'loss_bg', 'loss_att', 'loss_rela'}`` (weighted) instead of their
            sum, so that each term is logged by the distiller; the sum is the same.
    """

    def __init__(self, student_channels: int, teacher_channels: int, temp: float = 0.5,
                 alpha_fgd: float = 0.001, beta_fgd: float = 0.0005, gamma_fgd: float = 0.001,
                 lambda_fgd: float = 0.000005, split_terms: bool = False):
        super().__init__()
        self.student_channels, self.teacher_channels = int(student_channels), int(teacher_channels)
        self.temp = float(temp)
        self.alpha_fgd, self.beta_fgd = float(alpha_fgd), float(beta_fgd)
        self.gamma_fgd, self.lambda_fgd = float(gamma_fgd), float(lambda_fgd)
        self.split_terms = bool(split_terms)
        self.align = build_align(self.student_channels, self.teacher_channels)
        self.context_s = ContextBlock(self.teacher_channels)   # applied to the aligned student
        self.context_t = ContextBlock(self.teacher_channels)   # trainable, applied to the teacher feature

    def init_weights(self) -> None:
        self.context_s.init_weights()
        self.context_t.init_weights()

    def step_inputs(self, ctx, level: int) -> Dict[str, Tensor]:
        return {'masks': gt_masks_step_input(ctx, level)}

    def forward(self, student_feat: Tensor, teacher_feat: Tensor, data_samples: Optional[Sequence] = None,
                masks: Optional[Tuple[Tensor, Tensor]] = None) -> Union[Tensor, Dict[str, Tensor]]:
        s = align_student(self.align, student_feat, self.student_channels, self.teacher_channels, 'FGDLoss')
        t = teacher_feat.detach()
        if s.shape != t.shape:
            raise ValueError(f'FGDLoss: student {tuple(s.shape)} and teacher {tuple(t.shape)} shapes differ')
        fg, bg = masks_from_samples(data_samples, t, masks)
        sp_t, ch_t = spatial_attention(t, self.temp), channel_attention(t, self.temp)
        terms = {
            'loss_fg': self.alpha_fgd * weighted_sq_error(s, t, sp_t, ch_t, fg),
            'loss_bg': self.beta_fgd * weighted_sq_error(s, t, sp_t, ch_t, bg),
            'loss_att': self.gamma_fgd * attention_loss(s, t, self.temp, (sp_t, ch_t)),
            'loss_rela': self.lambda_fgd * (self.context_s(s) - self.context_t(t)).pow(2).sum() / s.shape[0],
        }
        return terms if self.split_terms else sum(terms.values())
