"""GKD (Gradient-guided Knowledge Distillation, WACV 2024), redesigned so that it trains the student.

The reference release's only active term compares two Grad-CAM masks built from NumPy arrays: it has no
gradient (methods.md §5.3). Here (methods.md §5.5) the gradient-derived masks are constants that WEIGHT an
FGD-style feature imitation, which is differentiable in the student:

    W        = M_box * M_cam_T [* M_cam_S]                    (N x 1 x H x W, detached)
    L_fea    = sum(A_sp(T) * A_ch(T) * W * (S' - T)^2) / N
    L_GKD    = alpha_gkd * L_fea + gamma_gkd * L_att + lambda_gkd * L_rela + beta_bg * L_bg
    cam_gap  = beta_gkd * mean |M_cam_T - M_cam_S|             (logged metric, no gradient)

CAMs are computed on the training batch itself: each model's head(s) run on DETACHED copies of its FPN
features (``requires_grad=True``); the target is the sum of the model's own detection losses against its own
top-k confident detections (pseudo-GT); ``torch.autograd.grad`` w.r.t. those copies only, so no parameter
``.grad`` is touched and the teacher stays frozen. Per level: ``ReLU(sum_c mean_hw|G_c| * |F_c|)``,
min-max normalised per image, at feature resolution.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..distiller import features_reused
from .fgd import (ContextBlock, align_student, attention_loss, build_align, channel_attention,
                  gt_masks_step_input, masks_from_samples, spatial_attention, weighted_sq_error)

CAM_MODES = ('both', 'teacher', 'none')


def _sum_losses(losses: Dict) -> Tensor:
    total = 0.0
    for key, value in losses.items():
        if 'loss' not in key:
            continue
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            total = total + item.sum()
    return total


def confident_detections(detector: nn.Module, feats: Sequence[Tensor], inputs: Tensor, data_samples: Sequence,
                         score_thr: float, topk: int) -> List[InstanceData]:
    """The detector's own top-``topk`` detections with ``score >= score_thr`` (input-image coordinates)."""
    samples = [DetDataSample(metainfo=s.metainfo) for s in data_samples]   # never touch the training samples
    with torch.no_grad(), features_reused(detector, tuple(f.detach() for f in feats)):
        results = detector.predict(inputs, samples, rescale=False)
    pseudo = []
    for result in results:
        pred = result.pred_instances
        keep = pred.scores >= score_thr
        scores, bboxes, labels = pred.scores[keep], pred.bboxes[keep], pred.labels[keep]
        order = scores.argsort(descending=True)[:topk]
        pseudo.append(InstanceData(bboxes=bboxes[order].detach(), labels=labels[order].detach()))
    return pseudo


def gradient_cams(detector: nn.Module, feats: Sequence[Tensor], inputs: Tensor, data_samples: Sequence,
                  score_thr: float = 0.3, topk: int = 10, pseudo_gt: str = 'detections',
                  empty_value: float = 0.0) -> List[Tensor]:
    """Per-level Grad-CAM masks ``N x 1 x H_l x W_l`` in [0, 1], detached.

    pseudo_gt: 'detections' (the model's own confident detections, the reference) or 'gt' (true boxes).
    An image without any target box gets ``empty_value`` everywhere (its target is zero).
    """
    if pseudo_gt == 'gt':
        targets = [InstanceData(bboxes=s.gt_instances.bboxes, labels=s.gt_instances.labels) for s in data_samples]
    else:
        targets = confident_detections(detector, feats, inputs, data_samples, score_thr, topk)
    has_target = torch.tensor([len(t) > 0 for t in targets], device=feats[0].device)
    with torch.enable_grad():
        leaves = tuple(f.detach().requires_grad_(True) for f in feats)
        samples = []
        for sample, target in zip(data_samples, targets):
            pseudo = DetDataSample(metainfo=sample.metainfo)
            pseudo.gt_instances = target
            samples.append(pseudo)
        with features_reused(detector, leaves):
            target_value = _sum_losses(detector.loss(inputs, samples))
        if torch.is_tensor(target_value) and target_value.requires_grad:
            grads = torch.autograd.grad(target_value, leaves, allow_unused=True)
        else:
            grads = (None,) * len(leaves)
    cams = []
    for feat, grad in zip(feats, grads):
        feat = feat.detach()
        if grad is None:
            grad = torch.zeros_like(feat)
        channel_weights = grad.abs().mean(dim=(2, 3), keepdim=True)            # |.| on gradients, as released
        cam = (channel_weights * feat.abs()).sum(dim=1, keepdim=True).relu()     # N x 1 x H x W
        flat = cam.flatten(1)
        flat = flat - flat.min(dim=1, keepdim=True).values
        flat = flat / (1e-7 + flat.max(dim=1, keepdim=True).values)
        cam = flat.view_as(cam)
        cam = torch.where(has_target.view(-1, 1, 1, 1), cam, torch.full_like(cam, empty_value))
        cams.append(cam)
    return cams


@MODELS.register_module()
class GKDLoss(nn.Module):
    """Gradient-guided feature imitation at one FPN level.

    Args:
        student_channels / teacher_channels: an ``align`` 1x1 conv is built when they differ.
        temp: attention temperature (FGD's).
        alpha_gkd: weight of the CAM-weighted imitation (product default = FGD's alpha for GFL / RetinaNet).
        beta_gkd: weight of the logged ``cam_gap`` metric (the reference's only weight; no gradient).
        gamma_gkd, lambda_gkd: FGD attention and relation terms (context modules built only if lambda > 0).
        beta_bg: optional FGD background term.
        cam_mode: 'both' (teacher x student CAM), 'teacher', or 'none' (reduces to FGD's fg term).
        box_mask: 'fgd' (FGD GT box mask) or 'none' (CAM weights only).
        pseudo_gt: 'detections' (own top-k detections with score >= score_thr) or 'gt'.
        empty_cam: mask value of an image without pseudo-GT: 'zero' or 'uniform' (1).
        split_terms: return the weighted terms as a dict (logged separately) instead of their sum.
    Called directly as ``loss(s, t, data_samples)`` only with ``cam_mode='none'`` or with the CAMs passed as
    ``cam_teacher=`` / ``cam_student=``; inside the distiller ``step_inputs`` computes them once per step.
    """

    def __init__(self, student_channels: int, teacher_channels: int, temp: float = 0.5,
                 alpha_gkd: float = 0.001, beta_gkd: float = 0.5, gamma_gkd: float = 0.0,
                 lambda_gkd: float = 0.0, beta_bg: float = 0.0, cam_mode: str = 'both', box_mask: str = 'fgd',
                 pseudo_gt: str = 'detections', score_thr: float = 0.3, topk: int = 10,
                 empty_cam: str = 'zero', split_terms: bool = False):
        super().__init__()
        for key, value, allowed in (('cam_mode', cam_mode, CAM_MODES), ('box_mask', box_mask, ('fgd', 'none')),
                                    ('pseudo_gt', pseudo_gt, ('detections', 'gt')),
                                    ('empty_cam', empty_cam, ('zero', 'uniform'))):
            if value not in allowed:
                raise ValueError(f'GKDLoss: {key}={value!r}, expected one of {allowed}')
        self.student_channels, self.teacher_channels = int(student_channels), int(teacher_channels)
        self.temp = float(temp)
        self.alpha_gkd, self.beta_gkd = float(alpha_gkd), float(beta_gkd)
        self.gamma_gkd, self.lambda_gkd, self.beta_bg = float(gamma_gkd), float(lambda_gkd), float(beta_bg)
        self.cam_mode, self.box_mask, self.pseudo_gt = cam_mode, box_mask, pseudo_gt
        self.score_thr, self.topk = float(score_thr), int(topk)
        self.empty_value = 0.0 if empty_cam == 'zero' else 1.0
        self.split_terms = bool(split_terms)
        self.align = build_align(self.student_channels, self.teacher_channels)
        if self.lambda_gkd > 0:
            self.context_s = ContextBlock(self.teacher_channels)
            self.context_t = ContextBlock(self.teacher_channels)

    def init_weights(self) -> None:
        if self.lambda_gkd > 0:
            self.context_s.init_weights()
            self.context_t.init_weights()

    # ------------------------------------------------------------------ per-step inputs (distiller hook)
    def _cams(self, ctx, role: str) -> List[Tensor]:
        key = ('gkd_cams', role, self.pseudo_gt, self.score_thr, self.topk, self.empty_value)
        if role == 'teacher':
            args = (ctx.teacher, ctx.teacher_feats, ctx.teacher_inputs)
        else:
            args = (ctx.student, ctx.raw_student_feats, ctx.inputs)
        return ctx.cached(key, lambda: gradient_cams(*args, ctx.data_samples, self.score_thr, self.topk,
                                                     self.pseudo_gt, self.empty_value))

    def step_inputs(self, ctx, level: int) -> Dict[str, Tensor]:
        extra = {'masks': gt_masks_step_input(ctx, level)}
        if self.cam_mode in ('both', 'teacher'):
            extra['cam_teacher'] = self._cams(ctx, 'teacher')[level]
        if self.cam_mode == 'both':   # 'teacher' mode skips the student CAM pass (cheaper), so no cam_gap
            extra['cam_student'] = self._cams(ctx, 'student')[level]
        return extra

    # ------------------------------------------------------------------ loss
    def forward(self, student_feat: Tensor, teacher_feat: Tensor, data_samples: Optional[Sequence] = None,
                masks: Optional[Tuple[Tensor, Tensor]] = None, cam_teacher: Optional[Tensor] = None,
                cam_student: Optional[Tensor] = None) -> Union[Tensor, Dict[str, Tensor]]:
        s = align_student(self.align, student_feat, self.student_channels, self.teacher_channels, 'GKDLoss')
        t = teacher_feat.detach()
        if s.shape != t.shape:
            raise ValueError(f'GKDLoss: student {tuple(s.shape)} and teacher {tuple(t.shape)} shapes differ')
        needs = {'both': ('cam_teacher', 'cam_student'), 'teacher': ('cam_teacher',), 'none': ()}[self.cam_mode]
        given = {'cam_teacher': cam_teacher, 'cam_student': cam_student}
        missing = [name for name in needs if given[name] is None]
        if missing:
            raise ValueError(f'GKDLoss(cam_mode={self.cam_mode!r}) needs {missing}: use it inside '
                             'DetectionDistiller (step_inputs computes the CAMs) or pass them explicitly')
        fg, bg = masks_from_samples(data_samples, t, masks)
        weight = fg if self.box_mask == 'fgd' else torch.ones_like(fg)
        for name in needs:
            weight = weight * given[name].detach()
        sp_t, ch_t = spatial_attention(t, self.temp), channel_attention(t, self.temp)
        n = s.shape[0]
        terms = {'loss_fea': self.alpha_gkd * weighted_sq_error(s, t, sp_t, ch_t, weight)}
        if self.gamma_gkd > 0:
            terms['loss_att'] = self.gamma_gkd * attention_loss(s, t, self.temp, (sp_t, ch_t))
        if self.lambda_gkd > 0:
            terms['loss_rela'] = self.lambda_gkd * (self.context_s(s) - self.context_t(t)).pow(2).sum() / n
        if self.beta_bg > 0:
            terms['loss_bg'] = self.beta_bg * weighted_sq_error(s, t, sp_t, ch_t, bg)
        if not self.split_terms:
            return sum(terms.values())
        if cam_teacher is not None and cam_student is not None:
            terms['cam_gap'] = self.beta_gkd * (cam_teacher - cam_student).abs().mean().detach()
        return terms
