"""The knowledge inputs of the search space: what each takes from a training step.

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
  head's classification of the sampled RoIs through a softmax, teacher evaluated on the student's RoIs; a Cascade
  R-CNN teacher scores them as at test time, softmax of the mean of its stages' logits). Heterogeneous pairs
  (``dense_pairs.py``): class maps compared at levels of equal stride, reduced per position where the prior
  counts differ (option ``prior_reduce``); a two-stage teacher of a one-stage student classifies the student's
  most confident boxes with its RoI head; a one-stage teacher of a two-stage student serves no logits;
* ``localization`` (absent from the release): the dense head's regression decoded to boxes with the head's
  own coder at its anchors/points, on positions where the teacher's max class score exceeds ``score_thr``
  (at least ``min_positions``, by teacher score); boxes are in units of the position's stride (so L1 is
  comparable across levels; IoU/GIoU are scale-free). GFL offers ``kl`` on its box-side distributions;
  heterogeneous one-stage pairs compare boxes at matching positions (``dense_pairs.py``), while a two-stage
  detector's dense boxes are RPN proposals, never compared with a one-stage detector's detections;
* ``cross_head`` (CrossKD): the class maps of the student's head crossed into the teacher's head at the input
  parameter ``cross_index`` (``cross_head.py``) through a sigmoid, against the teacher's own; dense heads with
  stacked-conv towers only (GFL, RetinaNet, FCOS), the reason otherwise in ``DetectorFamily.cross_problem``;
* ``mask``: the RoI mask head's probabilities (``N_pos x C x 28 x 28``), student on its positive RoIs, teacher
  evaluated on the same RoIs (a Cascade Mask R-CNN teacher: the mean of its stages'); a Mask R-CNN student and a
  mask-head teacher only (``DetectorFamily.student_mask_problem`` / ``mask_problem``).

Where each detector family keeps those tensors (dense head, class maps, boxes, targets, head towers) is
``families.py``; this module only says what each input takes (recorders vs. connectors, as in mmrazor). The
student's outputs are read with ``family`` (the student's), the teacher's with ``ctx.teacher_family``; each
input says which (teacher, student) family pairs it serves (``pair_problem``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .context import DistillContext
from .cross_head import crossed_outputs, recorder_points, resolve_cross_index
from .dense_pairs import aligned_dense_boxes, class_probability_pairs, teacher_classified_boxes
from .errors import ConfigError
from .families import DetectorFamily
from .levels import fpn_strides, strides_from_sizes
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

    # whether the input reads recorded student module calls (``student_recorders``)
    uses_recorders = False

    def student_recorders(self, student, family: DetectorFamily) -> Dict[str, str]:
        """Student modules whose calls the distiller must record for this input."""
        return {}

    @classmethod
    def family_problem(cls, family: DetectorFamily) -> Optional[str]:
        """Why this input cannot serve the family, or None."""
        return None

    @classmethod
    def pair_problem(cls, teacher: DetectorFamily, student: DetectorFamily) -> Optional[str]:
        """Why this input cannot serve a teacher of family ``teacher`` and a student of family ``student``, or None
        (feature inputs serve every pair; by default an input needs only the student's family)."""
        return cls.family_problem(student)


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
    if ctx.level_strides is not None:   # the distiller's level pairs
        return list(ctx.level_strides)
    strides = fpn_strides(ctx.student)
    if strides is not None and len(strides) >= len(ctx.teacher_feats):
        return strides[:len(ctx.teacher_feats)]
    return strides_from_sizes(ctx.teacher_feats, ctx.inputs.shape[-1])


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
    uses_recorders = True   # two-stage: the RoI head's calls

    def student_recorders(self, student, family):
        return family.student_recorders()
    # RoI classification on at most this many RoIs per image (None = all): a two-stage student's sampled RoIs
    # (positives first), a one-stage student's most confident boxes (two-stage teacher).
    # prior_reduce: how a position's priors are reduced where the two heads have different prior counts.
    defaults = {'max_rois_per_image': 32, 'prior_reduce': 'max'}

    @classmethod
    def pair_problem(cls, teacher, student):
        if teacher.dense_scores == student.dense_scores or teacher.classifies_rois:
            return None
        return (f'a one-stage {teacher.name} teacher has no RoI head to classify the student\'s RoIs, and its class '
                f'maps score classes where the {student.name} RPN scores objectness')

    def parts(self, ctx, family, distance):
        teacher_family = ctx.teacher_family
        pairs = []
        if family.dense_scores == teacher_family.dense_scores:
            pairs = class_probability_pairs(ctx, family, teacher_family, self.options['prior_reduce'])
        if family.classifies_rois:
            roi = family.roi_logits(ctx, self.options['max_rois_per_image'])
            if roi is not None:
                pairs.append((F.softmax(roi[0], -1), F.softmax(roi[1], -1)))
        elif teacher_family.classifies_rois:
            pairs.append(teacher_classified_boxes(ctx, family, teacher_family, self.options['max_rois_per_image']))
        return [Part('logits', pairs)]


class LocalizationResponse(KnowledgeInput):
    name = 'localization'
    defaults = {'score_thr': 0.5, 'min_positions': 16}

    @classmethod
    def pair_problem(cls, teacher, student):
        if teacher.dense_scores == student.dense_scores:
            return None
        two_stage, one_stage = (teacher, student) if teacher.dense_scores == 'objectness' else (student, teacher)
        return (f'the {two_stage.name} dense boxes are class-agnostic RPN proposals, not detections like the '
                f'{one_stage.name} boxes: no position-wise box to compare')

    def parts(self, ctx, family, distance):
        teacher_family = ctx.teacher_family
        for side in dict.fromkeys((family, teacher_family)):   # each family once, student first
            if distance == 'kl' and not side.has_distributions:
                raise ConfigError(f'localization distance "kl" needs a head with box distributions (GFL); '
                                  f'{side.name} has none: use l1, smooth_l1, iou or giou')
        s_head = family.dense_head(ctx.student)
        t_head = teacher_family.dense_head(ctx.teacher)
        student = family.dense_boxes(s_head, ctx.student_head_outputs)
        def decode_teacher():
            with torch.no_grad():
                return teacher_family.dense_boxes(t_head, ctx.teacher_head_outputs)
        teacher = ctx.cached('teacher_dense_boxes', decode_teacher)
        student, teacher = aligned_dense_boxes(ctx, family, teacher_family, student, teacher)
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


class CrossHeadResponse(KnowledgeInput):
    name = 'cross_head'
    defaults = {'cross_index': 'auto'}
    uses_recorders = True   # the student's head towers at the cross point

    def _index(self, student, teacher, family: DetectorFamily) -> int:
        return resolve_cross_index(family, family.dense_head(student),
                                   family.dense_head(teacher) if teacher is not None else None,
                                   self.options['cross_index'])

    def student_recorders(self, student, family):
        return recorder_points(student, self._index(student, None, family))

    @classmethod
    def family_problem(cls, family):
        return family.cross_problem

    @classmethod
    def pair_problem(cls, teacher, student):
        if teacher.name != student.name:
            return (f'CrossKD runs the student\'s head towers through the teacher\'s head of the same kind; a '
                    f'{teacher.name} head and a {student.name} head differ')
        return cls.family_problem(student)

    def parts(self, ctx, family, distance):
        crossed, teacher = crossed_outputs(ctx, family, self._index(ctx.student, ctx.teacher, family))
        pairs = [(r.sigmoid(), t.sigmoid()) for r, t in zip(family.class_maps(crossed), family.class_maps(teacher))]
        return [Part('cross_head', pairs)]


class MaskResponse(KnowledgeInput):
    """The RoI mask head's response: per-pixel mask probabilities (sigmoid of the ``N_pos x C x 28 x 28`` logits)
    of the student on its own positive RoIs against the teacher's mask head on the same RoIs (teacher features,
    student boxes, as the two-stage ``logits`` input does for RoI classification). All C class channels are
    distilled, not only the GT class's: the teacher's masks for the other classes are its shape prior for that
    box (dark knowledge, as soft class scores are), and every response transform then has a class axis to act on.
    Mask-head students only (Mask R-CNN); the teacher may be a Cascade Mask R-CNN, whose response is the mean of its
    stages' mask probabilities (``DetectorFamily.teacher_mask_probs``)."""
    name = 'mask'
    uses_recorders = True   # the student's mask RoI extractor (its RoIs) and mask head (its logits)

    def student_recorders(self, student, family):
        return family.mask_recorders()

    @classmethod
    def family_problem(cls, family):
        return family.student_mask_problem

    @classmethod
    def pair_problem(cls, teacher, student):
        if student.student_mask_problem or teacher.mask_problem is None:
            return student.student_mask_problem
        return f'the {teacher.name} teacher: {teacher.mask_problem}'

    def parts(self, ctx, family, distance):
        probs = family.roi_mask_probs(ctx)
        if probs is None:   # no positive RoI this step: nothing to distil
            return [Part('mask', [])]
        return [Part('mask', [probs])]


INPUTS: Dict[str, type] = {cls.name: cls for cls in (
    GlobalFeatures, ForegroundBackgroundFeatures, InstanceFeatures, LogitsResponse, LocalizationResponse,
    CrossHeadResponse, MaskResponse)}
