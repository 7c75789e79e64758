"""Global-Knowledge distillation (ECCV 2022): RDM robust distillation on PGM prototypes (methods.md §6.4).

* ``robust_weights``: per box ``w = 1 - |max_k cos(f_S, P_S[class]) - max_k cos(f_T, P_T[class])|`` from the
  RAW student / teacher pooled features and the class's prototypes; detached. Classes without prototypes
  (before the first generation) get weight 1, i.e. the plain binary box mask.
* ``GlobalKDLoss`` (level-wise): point-wise fg/bg imitation between ``adapt(S_raw)`` (a 3x3 conv) and the
  teacher, the fg mask holding the robust weights of the boxes assigned to this level; attenuated by
  ``1 - progress``.
* ``GlobalKDSoftLabelLoss`` (step-wise, two-stage detectors): robust-weighted KL between teacher and student
  RoI-head class distributions on the student's positive RoIs (temperature 2, averaged over classes).

A config combines them as two ``distill_losses`` entries plus the prototype hook:

    distill_losses=[dict(name='gkd_point', levels='all', loss=dict(type='GlobalKDLoss', ...)),
                    dict(name='gkd_soft', loss=dict(type='GlobalKDSoftLabelLoss', ...))]
    custom_hooks=[dict(type='GlobalKDPrototypeHook', ...)]
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn

from .prototypes import box_mean_pool

# student submodules whose calls (during the student's own loss forward) give the sampled RoIs, their RoI
# features, the RoI-head logits and the assigned labels (bg = num_classes), in the same row order
ROI_RECORDERS = {'gkd_roi_feats': 'roi_head.bbox_roi_extractor',
                 'gkd_roi_logits': 'roi_head.bbox_head',
                 'gkd_roi_targets': 'roi_head.bbox_head.loss_cls'}


def robust_weights(f_s: Tensor, f_t: Tensor, labels: Tensor, proto_s: Tensor, proto_t: Tensor,
                   valid: Tensor) -> Tensor:
    """``B`` weights in [0, 1]: 1 - |best student-prototype cosine - best teacher-prototype cosine|.

    f_s ``B x Cs``, f_t ``B x Ct``; proto_* ``K x P x C`` (K classes, P prototypes); valid ``K`` bool.
    """
    with torch.no_grad():
        if f_s.shape[0] == 0:
            return f_s.new_zeros(0)
        labels = labels.long()
        p_s = F.normalize(proto_s.to(f_s)[labels], dim=-1)                   # B x P x Cs
        p_t = F.normalize(proto_t.to(f_t)[labels], dim=-1)
        q_s = (p_s @ F.normalize(f_s, dim=-1).unsqueeze(-1)).squeeze(-1).amax(dim=1)
        q_t = (p_t @ F.normalize(f_t, dim=-1).unsqueeze(-1)).squeeze(-1).amax(dim=1)
        weights = 1 - (q_s - q_t).abs()
        return torch.where(valid.to(weights.device)[labels], weights, torch.ones_like(weights))


class _PrototypeStore(nn.Module):
    """Prototype buffers (saved with the model, excluded from the student-only checkpoint)."""

    def _init_store(self, num_classes: int, num_prototypes: int, student_channels: int, teacher_channels: int,
                    num_levels: Optional[int]) -> None:
        lead = () if num_levels is None else (num_levels,)
        self.num_classes = int(num_classes)
        self.register_buffer('proto_student', torch.zeros(*lead, num_classes, num_prototypes, student_channels))
        self.register_buffer('proto_teacher', torch.zeros(*lead, num_classes, num_prototypes, teacher_channels))
        self.register_buffer('proto_valid', torch.zeros(*lead, num_classes, dtype=torch.bool))
        self.attenuation = 1.0

    def set_attenuation(self, factor: float) -> None:
        self.attenuation = float(factor)

    def _store(self, level: Optional[int], protos_s: Sequence[Tensor], protos_t: Sequence[Tensor],
               valid: Tensor) -> None:
        if level is None:   # a store over all levels
            levels = range(self.proto_student.shape[0])
            new_s = torch.stack([protos_s[l] for l in levels])
            new_t = torch.stack([protos_t[l] for l in levels])
            new_v = valid.unsqueeze(0).expand(len(levels), -1)
        else:
            new_s, new_t, new_v = protos_s[level], protos_t[level], valid
        if new_s.shape != self.proto_student.shape or new_t.shape != self.proto_teacher.shape:
            raise ValueError(f'{type(self).__name__}: prototypes {tuple(new_s.shape)}/{tuple(new_t.shape)} do not '
                             f'match the buffers {tuple(self.proto_student.shape)}/{tuple(self.proto_teacher.shape)}'
                             ' (check num_classes, num_prototypes and the channels)')
        self.proto_student.copy_(new_s)
        self.proto_teacher.copy_(new_t)
        self.proto_valid.copy_(new_v)


def _level_of_boxes(boxes: Tensor, canonical_scale: float, num_levels: int) -> Tensor:
    scale = ((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)).sqrt()
    return torch.floor(torch.log2(scale / canonical_scale + 1e-6)).clamp(0, num_levels - 1).long()


def point_mask(boxes: Tensor, batch_idx: Tensor, weights: Tensor, n: int, h: int, w: int, stride: float) -> Tensor:
    """The reference's fg mask ``N x 1 x H x W``, vectorised over boxes.

    Per image, boxes in order: ``M[ly:ry, lx:rx] = w_b`` (overwrite, later boxes win; ``int(x/stride)``, no
    +1); a box collapsing to one row or column instead sets ``M[ly, lx] = max(M[ly, lx], w_b)``. So a cell's
    value is the weight of the last covering box, raised by any collapsed box that comes after it.
    """
    mask = torch.zeros(n, h, w, device=boxes.device)
    if boxes.shape[0] == 0:
        return mask.unsqueeze(1)
    lx, ly = (boxes[:, 0] / stride).long(), (boxes[:, 1] / stride).long()
    rx, ry = (boxes[:, 2] / stride).long().clamp(max=w), (boxes[:, 3] / stride).long().clamp(max=h)
    point = (lx == rx) | (ly == ry)
    order = torch.arange(1, boxes.shape[0] + 1, device=boxes.device, dtype=torch.float32)
    ys = torch.arange(h, device=boxes.device)
    xs = torch.arange(w, device=boxes.device)
    rows = (ys >= ly[:, None]) & (ys < ry[:, None])
    cols = (xs >= lx[:, None]) & (xs < rx[:, None])
    slab = rows[:, :, None] & cols[:, None, :] & ~point[:, None, None]                  # B x H x W
    at = (ys == ly.clamp(0, h - 1)[:, None])[:, :, None] & (xs == lx.clamp(0, w - 1)[:, None])[:, None, :]
    at = at & point[:, None, None]
    index = batch_idx.view(-1, 1, 1).expand(-1, h, w)

    def per_image_max(values: Tensor) -> Tensor:   # B x H x W -> N x H x W, max over each image's boxes
        return torch.zeros(n, h, w, device=boxes.device).scatter_reduce_(0, index, values, 'amax')

    last = per_image_max(slab * order[:, None, None])                               # order of the last slab box
    slab_value = per_image_max(torch.where(slab & (order[:, None, None] == last[batch_idx]),
                                           weights[:, None, None], 0.0))
    after = at & (order[:, None, None] > last[batch_idx])
    point_value = per_image_max(torch.where(after, weights[:, None, None], 0.0))
    return torch.maximum(slab_value, point_value).unsqueeze(1)


def _kd_boxes_from_samples(data_samples, device) -> Tuple[Tensor, Tensor, Tensor]:
    boxes = [s.gt_instances.bboxes.to(device).float() for s in data_samples]
    labels = [s.gt_instances.labels.to(device) for s in data_samples]
    batch_idx = [torch.full((len(b),), i, device=device, dtype=torch.long) for i, b in enumerate(boxes)]
    return torch.cat(boxes).view(-1, 4), torch.cat(labels).long(), torch.cat(batch_idx)


def positive_rois(ctx) -> Dict[str, Tensor]:
    """The student's positive sampled RoIs of this step, from its own RoI-head forward (recorded)."""
    def compute():
        feats_call = ctx.recorded_call('gkd_roi_feats')
        logits_call = ctx.recorded_call('gkd_roi_logits')
        targets_call = ctx.recorded_call('gkd_roi_targets')
        if feats_call is None or logits_call is None or targets_call is None:
            raise RuntimeError('Global-Knowledge RoI terms need a two-stage student with roi_head.bbox_roi_extractor, '
                               'roi_head.bbox_head and its loss_cls (nothing was recorded)')
        rois = feats_call[0][1]
        labels = targets_call[0][1]
        num_classes = logits_call[1][0].shape[1] - 1
        pos = labels < num_classes
        return {'rois': rois[pos].detach(), 'labels': labels[pos], 'roi_feats': feats_call[1][pos],
                'logits': logits_call[1][0][pos], 'num_inputs': len(feats_call[0][0])}
    return ctx.cached('gkd_positive_rois', compute)


def _stride_of(data_samples, feat: Tensor) -> float:
    pad_h = data_samples[0].metainfo['batch_input_shape'][0]
    return float(2 ** round(math.log2(pad_h / feat.shape[-2])))


@MODELS.register_module()
class GlobalKDLoss(_PrototypeStore):
    """Robust point-wise (fg/bg) feature distillation at one FPN level.

    ``loss(student_feat, teacher_feat, data_samples, level=l)`` (the distiller provides ``level``, the raw
    student feature, the level's stride and the KD boxes through ``step_inputs``).

    Args:
        student_channels / teacher_channels / num_classes / num_prototypes: shapes of the adaptation conv
            (3x3, padding 1) and of the prototype buffers.
        fg_weight, bg_weight, loss_weight: kd_param (1, 4, 1 in the released config).
        num_levels: levels the point loss is averaged over (5 = P2..P6). canonical_scale: box-to-level rule
            ``floor(log2(sqrt(wh) / canonical_scale))`` (56 in the reference; smaller for tiny images).
        kd_boxes: 'gt' (GT boxes) or 'proposals' (the student's positive RoIs; two-stage; the reference).
        use_robust_weights: prototype weights in the fg mask (False: binary box mask).
        kd_attenuation: multiply by ``1 - progress`` (set by ``GlobalKDPrototypeHook``).
        split_terms: return ``{'loss_fg', 'loss_bg'}`` instead of their sum.
    """

    def __init__(self, student_channels: int, teacher_channels: int, num_classes: int, num_prototypes: int = 10,
                 fg_weight: float = 1.0, bg_weight: float = 4.0, loss_weight: float = 1.0, num_levels: int = 5,
                 canonical_scale: float = 56.0, kd_boxes: str = 'proposals', use_robust_weights: bool = True,
                 kd_attenuation: bool = True, split_terms: bool = False):
        super().__init__()
        if kd_boxes not in ('gt', 'proposals'):
            raise ValueError(f"GlobalKDLoss: kd_boxes={kd_boxes!r}, expected 'gt' or 'proposals'")
        self.student_channels, self.teacher_channels = int(student_channels), int(teacher_channels)
        self._init_store(num_classes, num_prototypes, self.student_channels, self.teacher_channels, None)
        self.fg_weight, self.bg_weight, self.loss_weight = float(fg_weight), float(bg_weight), float(loss_weight)
        self.num_levels, self.canonical_scale = int(num_levels), float(canonical_scale)
        self.kd_boxes, self.use_robust_weights = kd_boxes, bool(use_robust_weights)
        self.kd_attenuation, self.split_terms = bool(kd_attenuation), bool(split_terms)
        self.adapt = nn.Conv2d(self.student_channels, self.teacher_channels, 3, padding=1)
        if kd_boxes == 'proposals':
            self.student_recorders = dict(ROI_RECORDERS)

    def receive_prototypes(self, level: Optional[int], protos_s, protos_t, valid) -> None:
        if level is None:
            raise ValueError('GlobalKDLoss is level-wise: configure it with levels=... in distill_losses')
        self._store(level, protos_s, protos_t, valid)

    def step_inputs(self, ctx, level: int) -> Dict:
        if self.kd_boxes == 'proposals':
            pos = positive_rois(ctx)
            kd = (pos['rois'][:, 1:], pos['labels'], pos['rois'][:, 0].long())
        else:
            kd = ctx.cached('gkd_gt_boxes', lambda: _kd_boxes_from_samples(ctx.data_samples, ctx.inputs.device))
        return {'level': level, 'raw_student_feat': ctx.raw_student_feats[level], 'kd_boxes': kd}

    def forward(self, student_feat: Tensor, teacher_feat: Tensor, data_samples: Optional[Sequence] = None,
                level: Optional[int] = None, raw_student_feat: Optional[Tensor] = None,
                kd_boxes: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
                stride: Optional[float] = None) -> Union[Tensor, Dict[str, Tensor]]:
        if level is None:
            raise ValueError('GlobalKDLoss needs level= (its FPN level index: boxes are assigned to levels); '
                             'DetectionDistiller passes it through step_inputs')
        raw = raw_student_feat if raw_student_feat is not None else student_feat
        if raw.shape[1] != self.student_channels:
            raise ValueError(f'GlobalKDLoss: raw student feature has {raw.shape[1]} channels, '
                             f'student_channels={self.student_channels}')
        t = teacher_feat.detach()
        adapted = self.adapt(raw)
        n, c, h, w = t.shape
        if kd_boxes is None:
            if data_samples is None:
                raise ValueError('GlobalKDLoss: pass data_samples (GT boxes) or kd_boxes=')
            kd_boxes = _kd_boxes_from_samples(data_samples, t.device)
        if stride is None:
            stride = _stride_of(data_samples, t)
        boxes, labels, batch_idx = kd_boxes
        here = _level_of_boxes(boxes, self.canonical_scale, self.num_levels) == level
        boxes, labels, batch_idx = boxes[here].detach(), labels[here], batch_idx[here]
        if self.use_robust_weights and bool(self.proto_valid.any()):
            # region rows int(|y1|/s)..int(|y2|/s) inclusive on the RAW features
            a = boxes.abs() / stride
            f_s = box_mean_pool(raw.detach(), batch_idx, a[:, 1].long(), a[:, 3].long(), a[:, 0].long(), a[:, 2].long())
            f_t = box_mean_pool(t, batch_idx, a[:, 1].long(), a[:, 3].long(), a[:, 0].long(), a[:, 2].long())
            weights = robust_weights(f_s, f_t, labels, self.proto_student, self.proto_teacher, self.proto_valid)
        else:
            weights = torch.ones(boxes.shape[0], device=t.device)
        fg = point_mask(boxes, batch_idx, weights.float(), n, h, w, stride)
        bg = (fg <= 0).to(fg.dtype)
        sq = (adapted - t).pow(2)
        # sums over N*C*H*W: the mask sums include the channel factor C
        loss_fg = (sq * fg).sum() / max(1.0, 2 * c * float(fg.sum())) * self.fg_weight
        loss_bg = (sq * bg).sum() / max(1.0, 2 * c * float(bg.sum())) * self.bg_weight
        factor = self.loss_weight * (self.attenuation if self.kd_attenuation else 1.0) / self.num_levels
        terms = {'loss_fg': factor * loss_fg, 'loss_bg': factor * loss_bg}
        return terms if self.split_terms else terms['loss_fg'] + terms['loss_bg']


@MODELS.register_module()
class GlobalKDSoftLabelLoss(_PrototypeStore):
    """Robust soft-label KD on the student's positive RoIs (two-stage detectors), step-wise: ``loss(ctx)``.

    ``loss = loss_weight * mean_r(w_r * T^2 * mean_classes(p_T (log p_T - log_softmax(z_S / T))))`` with the
    teacher's RoI head run on the student's positive RoIs. Not attenuated (as released).
    Args: student_channels / teacher_channels (RoI feature channels), num_classes, num_prototypes,
    num_levels (prototype levels, = FPN levels), temperature, loss_weight, use_robust_weights.
    """

    student_recorders = dict(ROI_RECORDERS)

    def __init__(self, student_channels: int, teacher_channels: int, num_classes: int, num_prototypes: int = 10,
                 num_levels: int = 5, temperature: float = 2.0, loss_weight: float = 1.0,
                 use_robust_weights: bool = True):
        super().__init__()
        self._init_store(num_classes, num_prototypes, int(student_channels), int(teacher_channels), int(num_levels))
        self.temperature, self.loss_weight = float(temperature), float(loss_weight)
        self.use_robust_weights = bool(use_robust_weights)

    def receive_prototypes(self, level: Optional[int], protos_s, protos_t, valid) -> None:
        self._store(None, protos_s, protos_t, valid)

    def forward(self, ctx) -> Dict[str, Tensor]:
        pos = positive_rois(ctx)
        logits_s = pos['logits']
        if logits_s.shape[0] == 0:
            return {'loss': logits_s.sum() * 0.0}
        roi_head = ctx.teacher.roi_head
        with torch.no_grad():
            extractor = roi_head.bbox_roi_extractor
            feats_t = extractor(tuple(ctx.all_teacher_feats[:extractor.num_inputs]), pos['rois'])
            logits_t = roi_head.bbox_head(feats_t)[0]
            if self.use_robust_weights and bool(self.proto_valid.any()):
                levels = extractor.map_roi_levels(pos['rois'], extractor.num_inputs)
                f_s, f_t = pos['roi_feats'].detach().mean(dim=(2, 3)), feats_t.mean(dim=(2, 3))
                weights = torch.ones(levels.shape[0], device=logits_s.device)
                for level in levels.unique().tolist():   # at most 4 RoI levels: vectorised within each
                    sel = levels == level
                    weights[sel] = robust_weights(f_s[sel], f_t[sel], pos['labels'][sel], self.proto_student[level],
                                                  self.proto_teacher[level], self.proto_valid[level])
            else:
                weights = torch.ones(logits_s.shape[0], device=logits_s.device)
        temp = self.temperature
        p_t = F.softmax(logits_t / temp, dim=1)
        kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - F.log_softmax(logits_s / temp, dim=1))).mean(dim=1) * temp ** 2
        return {'loss': self.loss_weight * (weights * kl).mean(), 'robust_weight': weights.mean()}
