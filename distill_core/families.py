"""Where each detector family keeps what distillation takes: its dense head, class maps, decoded boxes, the
assigner's targets and, for CrossKD, the layers of its head towers (the "recorder" side, as mmrazor separates
recorders from connectors and losses; ``knowledge.py`` says what each knowledge input takes from here).

Adding a detector family = one ``DetectorFamily`` subclass in ``FAMILIES``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import FCOSHead, GFLHead, RepPointsHead, RetinaHead, RPNHead
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.structures.bbox import get_box_tensor
from mmdet.models.utils import unpack_gt_instances
from torch import Tensor, nn

from .context import DistillContext, dense_head_name
from .errors import ConfigError


@dataclass
class DenseBoxes:
    """Decoded dense predictions of a whole batch, all levels concatenated (P positions per image)."""
    boxes: Tensor                 # N x P x 4, xyxy in input pixels
    scores: Tensor                # N x P, max class probability
    strides: Tensor               # P
    distributions: Optional[Tensor] = None   # N x P x 4 x (reg_max + 1) box-side logits (GFL)


@dataclass
class DenseTargets:
    """The assigner's targets of a batch as the head's own loss computes them, all levels concatenated in the
    order of ``DenseBoxes`` (P positions per image)."""
    labels: Tensor                # N x P, class index; num_classes = background
    label_weights: Tensor         # N x P, 0 where the assigner ignores the position
    num_pos: float                # the head's classification normaliser (number of positives, >= 1)
    level_sizes: List[int]        # positions per image at each level (sum = P)
    num_classes: int
    centerness: Optional[Tensor] = None   # N x P FCOS centerness targets of the positives (0 elsewhere)

    @property
    def positives(self) -> Tensor:
        return (self.labels >= 0) & (self.labels < self.num_classes)


def flat_levels(maps: Sequence[Tensor], per_position: int) -> Tensor:
    """Per-level ``N x (A*K) x H x W`` maps -> ``N x P x K``, levels concatenated (MMDetection's prior order)."""
    return torch.cat([_flat(m, per_position) for m in maps], 1)


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
    # what the dense head's class maps score: 'classes' (one-stage heads) or 'objectness' (a two-stage detector's
    # RPN); dense responses of a heterogeneous pair are compared only between maps of the same kind
    dense_scores = 'classes'
    # whether the detector has an RoI head that classifies given boxes (``roi_class_logits``)
    classifies_rois = False

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

    def roi_class_logits(self, ctx: DistillContext, rois: Tensor) -> Tensor:
        """The teacher's class logits (``R x (C + 1)``, background last) of ``rois`` (``R x 5``, image index
        first), as it scores its own proposals at test time, without gradient."""
        raise ConfigError(f'{self.name} has no RoI head to classify boxes')

    def student_recorders(self) -> Dict[str, str]:
        return {}

    def dense_targets(self, head, class_maps: Sequence[Tensor], data_samples) -> DenseTargets:
        """The assigner's targets for these maps (what the head's own loss assigns)."""
        raise ConfigError(f'{self.name}: no dense-head targets for distillation')

    # ---------------------------------------------------------------- CrossKD: the head's stacked-conv towers
    # Why the family's head cannot be crossed (CrossKD), or None. A crossable head has ``cls_convs`` and
    # ``reg_convs`` towers of ``stacked_convs`` modules, then predictors that ``predict_level`` applies.
    cross_problem: Optional[str] = 'its dense head has no stacked-conv towers'

    def published_cross_index(self, head) -> int:
        """CrossKD's cross point: 3 of 4 stacked convs for GFL/RetinaNet/ATSS, i.e. before the last conv."""
        return head.stacked_convs - 1

    def predict_level(self, head, cls_feat: Tensor, reg_feat: Tensor, level: int) -> Tuple[Tensor, ...]:
        """The head's outputs at one level from its towers' outputs (``forward_single`` after the towers)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the RoI mask head (Mask R-CNN)
    # Why the family, as a teacher, has no RoI mask head to read, or None (Mask R-CNN, Cascade Mask R-CNN) ...
    mask_problem: Optional[str] = 'it has no RoI mask head'
    # ... and why, as the student, it has no mask head to distil into, or None (Mask R-CNN only).
    student_mask_problem: Optional[str] = 'it has no RoI mask head'

    def mask_recorders(self) -> Dict[str, str]:
        return {}

    def roi_mask_probs(self, ctx: DistillContext) -> Optional[Tuple[Tensor, Tensor]]:
        """(student, teacher) mask probabilities ``N_pos x C x S x S`` on the student's positive RoIs."""
        raise ConfigError(f'{self.name}: {self.student_mask_problem}')

    def teacher_mask_probs(self, ctx: DistillContext, rois: Tensor) -> Tensor:
        """The teacher's mask probabilities of ``rois`` (``R x 5``) as MMDetection scores masks at test time."""
        raise ConfigError(f'the mask input needs a teacher with a RoI mask head; {self.name}: {self.mask_problem}')


class AnchorDeltaFamily(DetectorFamily):
    """Anchor grid + DeltaXYWH coder (RetinaNet; the RPN of two-stage detectors)."""

    def dense_boxes(self, head, outputs) -> DenseBoxes:
        reg_maps = list(outputs[1])
        n = reg_maps[0].shape[0]
        anchors, strides = _priors(head, reg_maps)
        anchors = torch.cat(anchors).unsqueeze(0).expand(n, -1, -1).reshape(-1, 4)
        deltas = torch.cat([_flat(r, 4) for r in reg_maps], 1).reshape(-1, 4)
        boxes = get_box_tensor(head.bbox_coder.decode(anchors, deltas)).reshape(n, -1, 4)
        return DenseBoxes(boxes, self.scores(head, outputs), strides)

    def dense_targets(self, head, class_maps, data_samples) -> DenseTargets:
        gt, ignored, metas = unpack_gt_instances(data_samples)
        anchors, valid = head.get_anchors(_sizes(class_maps), metas, device=class_maps[0].device)
        targets = head.get_targets(anchors, valid, gt, metas, batch_gt_instances_ignore=ignored)
        if targets is None:
            raise ConfigError(f'{self.name}: no anchor of the batch lies inside its image')
        # GFL's get_targets puts the anchors first; AnchorHead's starts with the labels
        labels, weights, avg_factor = (targets[1:3] + targets[-1:]) if len(targets) == 6 else \
            (targets[0], targets[1], targets[-1])
        return DenseTargets(torch.cat(labels, 1), torch.cat(weights, 1).float(), max(float(avg_factor), 1.0),
                            [lv.shape[1] for lv in labels], head.num_classes)


class RetinaNetFamily(AnchorDeltaFamily):
    name = 'retinanet'
    head_types = (RetinaHead,)
    cross_problem = None

    def predict_level(self, head, cls_feat, reg_feat, level):
        return head.retina_cls(cls_feat), head.retina_reg(reg_feat)


class FCOSFamily(DetectorFamily):
    name = 'fcos'
    head_types = (FCOSHead,)
    cross_problem = None

    def published_cross_index(self, head) -> int:
        """CrossKD crosses FCOS at 2 of 4 stacked convs: half the tower."""
        return head.stacked_convs // 2

    def predict_level(self, head, cls_feat, reg_feat, level):
        # FCOSHead.forward_single after its towers (out of place: the crossed path keeps its graph)
        bbox = head.scales[level](head.conv_reg(reg_feat)).float()
        centerness = head.conv_centerness(reg_feat if head.centerness_on_reg else cls_feat)
        if head.norm_on_bbox:
            bbox = bbox.clamp(min=0)
            if not head.training:
                bbox = bbox * head.strides[level]
        else:
            bbox = bbox.exp()
        return head.conv_cls(cls_feat), bbox, centerness

    def dense_targets(self, head, class_maps, data_samples) -> DenseTargets:
        gt = [s.gt_instances for s in data_samples]
        n = class_maps[0].shape[0]
        points = head.prior_generator.grid_priors(_sizes(class_maps), dtype=class_maps[0].dtype,
                                                  device=class_maps[0].device)
        labels, bbox_targets = head.get_targets(points, gt)   # per level, images concatenated
        labels = torch.cat([lv.reshape(n, -1) for lv in labels], 1)
        bbox_targets = torch.cat([b.reshape(n, -1, 4) for b in bbox_targets], 1)
        positive = (labels >= 0) & (labels < head.num_classes)
        centerness = labels.new_zeros(labels.shape, dtype=class_maps[0].dtype)
        if positive.any():
            centerness[positive] = head.centerness_target(bbox_targets[positive])
        return DenseTargets(labels, torch.ones_like(centerness), max(float(positive.sum()), 1.0),
                            [p.shape[0] for p in points], head.num_classes, centerness)

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
    cross_problem = None

    def predict_level(self, head, cls_feat, reg_feat, level):
        return head.gfl_cls(cls_feat), head.scales[level](head.gfl_reg(reg_feat)).float()

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
    cross_problem = ('its predictors are deformable convs steered by the first-stage point offsets, so a crossed '
                     'tower output has no defined teacher path (CrossKD defines none for RepPoints)')

    def dense_boxes(self, head, outputs) -> DenseBoxes:
        if len(outputs) == 3:   # training forward: (cls, pts_init, pts_refine)
            offsets = [head.points2bbox(p) for p in outputs[2]]
        else:                   # eval forward already returns points2bbox(pts_refine)
            offsets = list(outputs[1])
        points, strides = _priors(head, offsets)
        centers = torch.cat(points)[:, :2].repeat(1, 2)
        boxes = torch.cat([_flat(o, 4) for o in offsets], 1) * strides.view(1, -1, 1) + centers
        return DenseBoxes(boxes, self.scores(head, outputs), strides)


class TwoStageFamily(AnchorDeltaFamily):
    """Faster R-CNN style: RPN as the dense head, plus the RoI head's classification of sampled RoIs."""
    name = 'faster_rcnn'
    head_types = (RPNHead,)
    dense_scores = 'objectness'
    classifies_rois = True
    cross_problem = ('a two-stage detector has no layered dense head to cross into: its RPN is one conv before '
                     'the predictors and its RoI head classifies pooled RoI features')
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
        return student_cls, ctx.teacher_family.roi_class_logits(ctx, rois)

    def roi_class_logits(self, ctx: DistillContext, rois: Tensor) -> Tensor:
        roi_head = ctx.teacher.roi_head
        with torch.no_grad():
            return roi_head.bbox_head(teacher_roi_features(ctx, roi_head.bbox_roi_extractor, rois))[0]


def teacher_roi_features(ctx: DistillContext, extractor: nn.Module, rois: Tensor) -> Tensor:
    """``rois`` pooled by one of the teacher's RoI extractors from its whole neck output, through its shared head
    where it has one: what its bbox or mask head takes (call without gradient)."""
    feats = extractor(tuple(ctx.all_teacher_feats[:extractor.num_inputs]), rois)
    roi_head = ctx.teacher.roi_head
    return roi_head.shared_head(feats) if getattr(roi_head, 'with_shared_head', False) else feats


class CascadeFamily(TwoStageFamily):
    """Cascade R-CNN (``CascadeRoIHead``, per-stage RoI extractors and box heads). As a teacher, its RoI
    classification is MMDetection's test-time score: the mean of the stages' logits, each later stage seeing the
    RoIs its predecessor refined (``CascadeRoIHead._refine_roi``); its softmax is the class score."""
    name = 'cascade_rcnn'

    def student_recorders(self) -> Dict[str, str]:
        # a cascade student's RoI heads are per-stage module lists: only its RPN responses are distilled
        return {}

    def roi_class_logits(self, ctx: DistillContext, rois: Tensor) -> Tensor:
        roi_head = ctx.teacher.roi_head
        # _refine_roi splits the RoIs per image in order: sort them by image (stably), restore the order after
        order = torch.argsort(rois[:, 0], stable=True)
        counts = torch.bincount(rois[:, 0].long(), minlength=len(ctx.data_samples)).tolist()
        metas = [sample.metainfo for sample in ctx.data_samples]
        with torch.no_grad():
            _, scores, _ = roi_head._refine_roi(tuple(ctx.all_teacher_feats), rois[order], metas, counts)
        logits = torch.empty_like(torch.cat(scores))
        logits[order] = torch.cat(scores)
        return logits


class MaskRCNNFamily(TwoStageFamily):
    """Mask R-CNN: the two-stage family plus the RoI mask head (``StandardRoIHead`` with ``mask_head``), whose
    probabilities on the student's positive RoIs the ``mask`` knowledge input distils."""
    name = 'mask_rcnn'
    mask_problem = student_mask_problem = None
    _MASK_EXTRACTOR, _MASK_HEAD = 'searched.mask_roi_extractor', 'searched.mask_head'

    def mask_recorders(self) -> Dict[str, str]:
        return {self._MASK_EXTRACTOR: 'roi_head.mask_roi_extractor', self._MASK_HEAD: 'roi_head.mask_head'}

    def roi_mask_probs(self, ctx: DistillContext) -> Optional[Tuple[Tensor, Tensor]]:
        """The student's mask head on its own positive RoIs (from its loss forward) and the frozen teacher's mask
        branch on the SAME RoIs pooled from the teacher's features; None when the step had no positive RoI (the
        student's mask head did not run)."""
        if getattr(ctx.student.roi_head, 'share_roi_extractor', False):
            raise ConfigError(f'{self.name}: the mask input needs a student with its own mask_roi_extractor')
        extractor_call = ctx.recorded_call(self._MASK_EXTRACTOR)
        head_call = ctx.recorded_call(self._MASK_HEAD)
        if extractor_call is None or head_call is None:
            return None
        rois = extractor_call[0][1].detach()
        return head_call[1].sigmoid(), ctx.teacher_family.teacher_mask_probs(ctx, rois)

    def teacher_mask_probs(self, ctx: DistillContext, rois: Tensor) -> Tensor:
        roi_head = ctx.teacher.roi_head
        extractor = roi_head.bbox_roi_extractor if roi_head.share_roi_extractor else roi_head.mask_roi_extractor
        with torch.no_grad():
            return roi_head.mask_head(teacher_roi_features(ctx, extractor, rois)).sigmoid()


class CascadeMaskFamily(CascadeFamily):
    """Cascade Mask R-CNN (``CascadeRoIHead`` with a mask head per stage). As a teacher, its mask response is
    MMDetection's test-time mask: the mean over the stages of each stage's mask head's sigmoid, all on the same
    boxes (``CascadeRoIHead.predict_mask``), here the student's positive RoIs."""
    name = 'cascade_mask_rcnn'
    mask_problem = None
    student_mask_problem = ("its mask heads are per-stage lists: the mask input distils into a single RoI mask "
                            "head (a Mask R-CNN student)")

    def teacher_mask_probs(self, ctx: DistillContext, rois: Tensor) -> Tensor:
        roi_head = ctx.teacher.roi_head
        with torch.no_grad():
            return sum(roi_head.mask_head[stage](teacher_roi_features(ctx, roi_head.mask_roi_extractor[stage],
                                                                      rois)).sigmoid()
                       for stage in range(roi_head.num_stages)) / roi_head.num_stages


FAMILIES: Dict[str, DetectorFamily] = {f.name: f for f in (
    RetinaNetFamily(), FCOSFamily(), GFLFamily(), RepPointsFamily(), TwoStageFamily(), CascadeFamily(),
    CascadeMaskFamily(), MaskRCNNFamily())}


def family_of(detector: nn.Module) -> DetectorFamily:
    """The family of a detector, from its dense head's type (most specific class first)."""
    head = getattr(detector, dense_head_name(detector))
    if isinstance(getattr(detector, 'roi_head', None), CascadeRoIHead):
        return FAMILIES['cascade_mask_rcnn' if detector.roi_head.with_mask else 'cascade_rcnn']
    for family in (FAMILIES['gfl'], FAMILIES['retinanet'], FAMILIES['fcos'], FAMILIES['reppoints'],
                   FAMILIES['faster_rcnn']):
        if isinstance(head, family.head_types):
            if family.name == 'faster_rcnn' and getattr(detector, 'roi_head', None) is None:
                break
            if family.name == 'faster_rcnn' and getattr(detector.roi_head, 'with_mask', False):
                return FAMILIES['mask_rcnn']   # the two-stage detector with a RoI mask head
            return family
    raise ConfigError(f'searched distillation does not know the detector family of {type(detector).__name__} '
                      f'(dense head {type(head).__name__}); known: {sorted(FAMILIES)}')
