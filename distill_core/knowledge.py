"""The five DetKDS knowledge inputs, and where each detector family keeps what they need.

A knowledge input turns one training step (``DistillContext``) into named parts, each a list of
``(student, teacher)`` tensor pairs plus a factor; the searched loss applies its cascade and distance to
every pair and sums them (one sum per part, as the reference release summed one loss per FPN level):

* ``global``: every FPN level's (channel-adapted) neck feature;
* ``fg_bg``: the features times FGD's GT foreground / background masks (``masks.fg_bg_masks``); parts
  ``fg`` (factor 1) and ``bg`` (factor 1/2, as released), the masks given as the parts' per-position weights
  (``Part.masks``) so that both parts share one concatenation of the maps;
* ``instance``: RoIAlign (mmcv's ``roi_align``, ``aligned=True``, ``spatial_scale = 1/stride``; on CPU its
  vectorised equivalent ``roi_align.RoIAlign`` where that is faster) of the GT boxes, each box at the FPN level
  the FPN rule picks from its size, batched per level. The cascade runs on the ``K x C x S x S``
  RoI features (the release ran it on the whole map, then pooled);
* ``logits``: the dense head's classification maps through a sigmoid (two-stage: RPN objectness, plus the RoI
  head's classification of the sampled RoIs through a softmax, teacher evaluated on the student's RoIs);
* ``localization`` (absent from the release): the dense head's regression decoded to boxes with the head's
  own coder at its anchors/points, on positions where the teacher's max class score exceeds ``score_thr``
  (at least ``min_positions``, by teacher score); boxes are in units of the position's stride (so L1 is
  comparable across levels; IoU/GIoU are scale-free). GFL offers ``kl`` on its box-side distributions.

Adding a detector family = one ``DetectorFamily`` subclass in ``FAMILIES`` saying where its dense head, class
maps and boxes are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import FCOSHead, GFLHead, RepPointsHead, RetinaHead, RPNHead
from mmdet.structures.bbox import get_box_tensor
from torch import Tensor, nn

from .context import DistillContext, dense_head_name
from .errors import ConfigError
from .masks import fg_bg_masks_levels
from .roi_align import RoIAlign

Pairs = List[Tuple[Tensor, Tensor]]


@dataclass
class Part:
    """One loss key's inputs: ``factor * sum_i D(cascade(s_i * m_i), cascade(t_i * m_i))``.

    ``masks`` (None, or one per pair): per-position weights applied to both sides before the cascade, e.g. FGD's
    GT masks. Parts that mask the same pairs share one concatenation of them when the searched loss fuses levels.
    """
    key: str
    pairs: Pairs
    factor: float = 1.0
    masks: Optional[List[Tensor]] = None


@dataclass
class DenseBoxes:
    """Decoded dense predictions of a whole batch, all levels concatenated (P positions per image)."""
    boxes: Tensor                 # N x P x 4, xyxy in input pixels
    scores: Tensor                # N x P, max class probability
    strides: Tensor               # P
    distributions: Optional[Tensor] = None   # N x P x 4 x (reg_max + 1) box-side logits (GFL)


def _flat(x: Tensor, per_position: int) -> Tensor:
    """``N x (A*K) x H x W`` -> ``N x (H*W*A) x K`` (MMDetection's prior order)."""
    n = x.shape[0]
    return x.permute(0, 2, 3, 1).reshape(n, -1, per_position)


def _sizes(maps: Sequence[Tensor]) -> List[Tuple[int, int]]:
    return [tuple(m.shape[-2:]) for m in maps]


def _priors(head, maps: Sequence[Tensor]) -> Tuple[List[Tensor], Tensor]:
    """The head's priors (anchors or points) per level for these maps, and each prior's stride (flat)."""
    priors = head.prior_generator.grid_priors(_sizes(maps), dtype=maps[0].dtype, device=maps[0].device)
    strides = torch.cat([torch.full((p.shape[0],), float(s[0] if isinstance(s, (tuple, list)) else s),
                                    device=maps[0].device)
                         for p, s in zip(priors, head.prior_generator.strides)])
    return priors, strides


class DetectorFamily:
    """Where a detector keeps its dense classification maps and boxes."""
    name = 'base'
    head_types: Tuple[type, ...] = ()
    has_distributions = False

    def dense_head(self, detector: nn.Module) -> nn.Module:
        return getattr(detector, dense_head_name(detector))

    def class_maps(self, outputs) -> List[Tensor]:
        """Per-level raw classification maps ``N x (A*K) x H x W``."""
        return list(outputs[0])

    def num_classes_per_prior(self, head) -> int:
        return head.cls_out_channels

    def scores(self, head, outputs) -> Tensor:
        k = self.num_classes_per_prior(head)
        return torch.cat([_flat(m, k) for m in self.class_maps(outputs)], 1).sigmoid().amax(-1)

    def dense_boxes(self, head, outputs) -> DenseBoxes:
        raise NotImplementedError

    def roi_logits(self, ctx: DistillContext, max_per_image: Optional[int] = None) -> Optional[Tuple[Tensor, Tensor]]:
        return None

    def student_recorders(self) -> Dict[str, str]:
        return {}


class AnchorDeltaFamily(DetectorFamily):
    """Anchor grid + DeltaXYWH coder (RetinaNet; the RPN of two-stage detectors)."""

    def dense_boxes(self, head, outputs) -> DenseBoxes:
        cls_maps, reg_maps = self.class_maps(outputs), list(outputs[1])
        n = reg_maps[0].shape[0]
        anchors, strides = _priors(head, reg_maps)
        anchors = torch.cat(anchors).unsqueeze(0).expand(n, -1, -1).reshape(-1, 4)
        deltas = torch.cat([_flat(r, 4) for r in reg_maps], 1).reshape(-1, 4)
        boxes = get_box_tensor(head.bbox_coder.decode(anchors, deltas)).reshape(n, -1, 4)
        return DenseBoxes(boxes, self.scores(head, outputs), strides)


class RetinaNetFamily(AnchorDeltaFamily):
    name = 'retinanet'
    head_types = (RetinaHead,)


class FCOSFamily(DetectorFamily):
    name = 'fcos'
    head_types = (FCOSHead,)

    def dense_boxes(self, head, outputs) -> DenseBoxes:
        reg_maps = list(outputs[1])
        n = reg_maps[0].shape[0]
        points, strides = _priors(head, reg_maps)
        dist = torch.cat([_flat(r, 4) for r in reg_maps], 1)
        # FCOS with norm_on_bbox predicts in stride units and multiplies by the stride only in eval mode
        if head.norm_on_bbox and head.training:
            dist = dist * strides.view(1, -1, 1)
        points = torch.cat(points).unsqueeze(0).expand(n, -1, -1).reshape(-1, 2)
        boxes = get_box_tensor(head.bbox_coder.decode(points, dist.reshape(-1, 4))).reshape(n, -1, 4)
        return DenseBoxes(boxes, self.scores(head, outputs), strides)


class GFLFamily(AnchorDeltaFamily):
    name = 'gfl'
    head_types = (GFLHead,)
    has_distributions = True

    def dense_boxes(self, head, outputs) -> DenseBoxes:
        reg_maps = list(outputs[1])
        n = reg_maps[0].shape[0]
        bins = head.reg_max + 1
        anchors, strides = _priors(head, reg_maps)
        centers = head.anchor_center(torch.cat(anchors))
        dist_logits = torch.cat([_flat(r, 4 * bins) for r in reg_maps], 1).reshape(n, -1, 4, bins)
        project = torch.arange(bins, dtype=dist_logits.dtype, device=dist_logits.device)
        distances = (F.softmax(dist_logits, -1) * project).sum(-1) * strides.view(1, -1, 1)
        points = centers.unsqueeze(0).expand(n, -1, -1).reshape(-1, 2)
        boxes = get_box_tensor(head.bbox_coder.decode(points, distances.reshape(-1, 4))).reshape(n, -1, 4)
        return DenseBoxes(boxes, self.scores(head, outputs), strides, dist_logits)


class RepPointsFamily(DetectorFamily):
    """Refined point sets -> boxes with the head's own ``points2bbox`` (moment/minmax), as its predictor."""
    name = 'reppoints'
    head_types = (RepPointsHead,)

    def dense_boxes(self, head, outputs) -> DenseBoxes:
        if len(outputs) == 3:   # training forward: (cls, pts_init, pts_refine)
            offsets = [head.points2bbox(p) for p in outputs[2]]
        else:                   # eval forward already returns points2bbox(pts_refine)
            offsets = list(outputs[1])
        n = offsets[0].shape[0]
        points, strides = _priors(head, offsets)
        centers = torch.cat(points)[:, :2].repeat(1, 2)
        boxes = torch.cat([_flat(o, 4) for o in offsets], 1) * strides.view(1, -1, 1) + centers
        return DenseBoxes(boxes, self.scores(head, outputs), strides)


class TwoStageFamily(AnchorDeltaFamily):
    """Faster R-CNN style: RPN as the dense head, plus the RoI head's classification of sampled RoIs."""
    name = 'faster_rcnn'
    head_types = (RPNHead,)
    _EXTRACTOR, _BBOX_HEAD = 'searched.bbox_roi_extractor', 'searched.bbox_head'

    def student_recorders(self) -> Dict[str, str]:
        return {self._EXTRACTOR: 'roi_head.bbox_roi_extractor', self._BBOX_HEAD: 'roi_head.bbox_head'}

    def roi_logits(self, ctx: DistillContext, max_per_image: Optional[int] = None) -> Optional[Tuple[Tensor, Tensor]]:
        """Student and teacher class logits of the student's sampled RoIs; with ``max_per_image``, only the
        first RoIs of each image: the sampler puts positives first, so all positives (25 % of 512 by default)
        and the first negatives are kept, and the teacher's RoI head (its cost grows with the RoI count)
        runs on far fewer RoIs."""
        extractor_call = ctx.recorded_call(self._EXTRACTOR)
        head_call = ctx.recorded_call(self._BBOX_HEAD)
        if extractor_call is None or head_call is None:
            return None   # RoI head not run this step (or recorders not installed): RPN logits only
        rois = extractor_call[0][1].detach()
        student_cls = head_call[1][0]
        if max_per_image is not None:
            image = rois[:, 0].long()   # RoIs are grouped by image, in sampling order
            counts = torch.bincount(image, minlength=int(image.max()) + 1 if len(image) else 0)
            starts = torch.cumsum(counts, 0) - counts
            keep = (torch.arange(len(rois), device=rois.device) - starts[image]) < max_per_image
            rois, student_cls = rois[keep], student_cls[keep]
        roi_head = ctx.teacher.roi_head
        with torch.no_grad():
            extractor = roi_head.bbox_roi_extractor
            feats = extractor(tuple(ctx.teacher_feats[:extractor.num_inputs]), rois)
            if getattr(roi_head, 'with_shared_head', False):
                feats = roi_head.shared_head(feats)
            teacher_cls = roi_head.bbox_head(feats)[0]
        return student_cls, teacher_cls


FAMILIES: Dict[str, DetectorFamily] = {f.name: f for f in (
    RetinaNetFamily(), FCOSFamily(), GFLFamily(), RepPointsFamily(), TwoStageFamily())}


def family_of(detector: nn.Module) -> DetectorFamily:
    """The family of a detector, from its dense head's type (most specific class first)."""
    head = getattr(detector, dense_head_name(detector))
    for family in (FAMILIES['gfl'], FAMILIES['retinanet'], FAMILIES['fcos'], FAMILIES['reppoints'],
                   FAMILIES['faster_rcnn']):
        if isinstance(head, family.head_types):
            if family.name == 'faster_rcnn' and getattr(detector, 'roi_head', None) is None:
                break
            return family
    raise ConfigError(f'searched distillation does not know the detector family of {type(detector).__name__} '
                      f'(dense head {type(head).__name__}); known: {sorted(FAMILIES)}')


# ------------------------------------------------------------------------------------------------ inputs
class KnowledgeInput:
    name = ''

    def __init__(self, **options):
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise ConfigError(f'knowledge input {self.name!r}: unknown option(s) {sorted(unknown)}; '
                              f'known: {sorted(self.defaults)}')
        self.options = {**self.defaults, **options}

    defaults: Dict[str, object] = {}

    def parts(self, ctx: DistillContext, family: DetectorFamily, distance: str) -> List[Part]:
        raise NotImplementedError


class GlobalFeatures(KnowledgeInput):
    name = 'global'

    def parts(self, ctx, family, distance):
        return [Part('global', list(zip(ctx.student_feats, ctx.teacher_feats)))]


def mask_cache_key(feat_hw: Tuple[int, int]) -> str:
    return f'fg_bg_masks_{feat_hw[0]}x{feat_hw[1]}'


def cached_fg_bg_masks(ctx: DistillContext, feat_hws: Sequence[Tuple[int, int]]) -> List[Tuple[Tensor, Tensor]]:
    """FGD masks for this step at several map sizes (built together), each computed once per step whichever
    loss asks first (``ctx.cache[mask_cache_key(hw)]``)."""
    missing = [hw for hw in feat_hws if mask_cache_key(hw) not in ctx.cache]
    if missing:
        for hw, masks in zip(missing, fg_bg_masks_levels(ctx.gt_bboxes, ctx.img_shapes, missing)):
            ctx.cache[mask_cache_key(hw)] = masks
    return [ctx.cache[mask_cache_key(hw)] for hw in feat_hws]


class ForegroundBackgroundFeatures(KnowledgeInput):
    name = 'fg_bg'

    def parts(self, ctx, family, distance):
        pairs = list(zip(ctx.student_feats, ctx.teacher_feats))
        masks = cached_fg_bg_masks(ctx, [tuple(s.shape[-2:]) for s in ctx.student_feats])
        return [Part('fg', pairs, 1.0, [fg for fg, _ in masks]), Part('bg', pairs, 0.5, [bg for _, bg in masks])]


def feature_strides(ctx: DistillContext) -> List[float]:
    """Stride of each FPN level: the dense head's prior strides, else from the padded input size."""
    head = getattr(ctx.student, dense_head_name(ctx.student), None)
    strides = getattr(getattr(head, 'prior_generator', None), 'strides', None)
    if strides is not None and len(strides) >= len(ctx.teacher_feats):
        return [float(s[0] if isinstance(s, (tuple, list)) else s) for s in strides[:len(ctx.teacher_feats)]]
    width = ctx.inputs.shape[-1]
    return [float(2 ** round(math.log2(width / f.shape[-1]))) for f in ctx.teacher_feats]


def fpn_levels(boxes: Tensor, strides: Sequence[float], num_levels: int) -> Tensor:
    """FPN rule (Lin et al.): a box of side ``sqrt(wh)`` goes to level ``floor(log2(sqrt(wh) / s0))`` with
    ``s0 = 14 * stride_0`` (= mmdet's ``finest_scale`` 56 for a stride-4 P2), clamped to the levels."""
    scale = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    level = torch.floor(torch.log2(scale / (14.0 * strides[0]) + 1e-6))
    return level.clamp(0, num_levels - 1).long()


class InstanceFeatures(KnowledgeInput):
    name = 'instance'
    defaults = {'roi_size': 7, 'sampling_ratio': 2}

    def parts(self, ctx, family, distance):
        boxes = ctx.gt_bboxes
        rois = torch.cat([torch.cat([b.new_full((b.shape[0], 1), float(i)), b[:, :4].float()], 1)
                          for i, b in enumerate(boxes)]) if boxes else torch.zeros(0, 5)
        if rois.shape[0] == 0:
            return [Part('instance', [])]
        rois = rois.to(ctx.teacher_feats[0].device)
        strides = feature_strides(ctx)
        levels = fpn_levels(rois[:, 1:], strides, len(ctx.teacher_feats))
        size = int(self.options['roi_size'])
        student_rois, teacher_rois = [], []
        for level in levels.unique().tolist():   # one batched RoIAlign per level (not per box), tables shared
            align = RoIAlign(rois[levels == level], size, 1.0 / strides[level], int(self.options['sampling_ratio']),
                             aligned=True)
            student_rois.append(align(ctx.student_feats[level]))
            with torch.no_grad():
                teacher_rois.append(align(ctx.teacher_feats[level]))
        return [Part('instance', [(torch.cat(student_rois), torch.cat(teacher_rois))])]


class LogitsResponse(KnowledgeInput):
    name = 'logits'
    # Two-stage: RoI classification on at most this many sampled RoIs per image (positives first); None = all.
    defaults = {'max_rois_per_image': 32}

    def parts(self, ctx, family, distance):
        s_maps = family.class_maps(ctx.student_head_outputs)
        t_maps = family.class_maps(ctx.teacher_head_outputs)
        pairs = [(s.sigmoid(), t.sigmoid()) for s, t in zip(s_maps, t_maps)]
        roi = family.roi_logits(ctx, self.options['max_rois_per_image'])
        if roi is not None:
            pairs.append((F.softmax(roi[0], -1), F.softmax(roi[1], -1)))
        return [Part('logits', pairs)]


class LocalizationResponse(KnowledgeInput):
    name = 'localization'
    defaults = {'score_thr': 0.5, 'min_positions': 16}

    def parts(self, ctx, family, distance):
        if distance == 'kl' and not family.has_distributions:
            raise ConfigError(f'localization distance "kl" needs a head with box distributions (GFL); '
                              f'{family.name} has none: use l1, smooth_l1, iou or giou')
        s_head = family.dense_head(ctx.student)
        t_head = family.dense_head(ctx.teacher)
        student = family.dense_boxes(s_head, ctx.student_head_outputs)
        def decode_teacher():
            with torch.no_grad():
                return family.dense_boxes(t_head, ctx.teacher_head_outputs)
        teacher = ctx.cached('teacher_dense_boxes', decode_teacher)
        chosen = self.confident_positions(teacher.scores)
        if distance == 'kl':
            pair = (student.distributions[chosen].reshape(-1, student.distributions.shape[-1]),
                    teacher.distributions[chosen].reshape(-1, teacher.distributions.shape[-1]))
        else:
            stride = teacher.strides.unsqueeze(0).expand_as(teacher.scores)[chosen].unsqueeze(-1)
            pair = (student.boxes[chosen] / stride, teacher.boxes[chosen] / stride)
        return [Part('loc', [pair])]

    def confident_positions(self, scores: Tensor) -> Tensor:
        """Boolean N x P: teacher max score above the threshold, or the top ``min_positions`` if too few."""
        chosen = scores > float(self.options['score_thr'])
        need = min(int(self.options['min_positions']), scores.numel())
        if int(chosen.sum()) < need:
            top = scores.flatten().topk(need).indices
            chosen = torch.zeros_like(chosen).flatten()
            chosen[top] = True
            chosen = chosen.view_as(scores)
        return chosen


INPUTS: Dict[str, type] = {cls.name: cls for cls in (
    GlobalFeatures, ForegroundBackgroundFeatures, InstanceFeatures, LogitsResponse, LocalizationResponse)}
