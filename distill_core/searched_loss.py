"""``SearchedDistillLoss``: the loss a genome describes, as a step-wise distillation loss.

Config: ``dict(name='searched', loss=dict(type='SearchedDistillLoss', genome=<Genome | dict | JSON>))``.
Called with the step's ``DistillContext``, it returns one entry per enabled term part
(``loss_global``, ``loss_fg``, ``loss_bg``, ``loss_instance``, ``loss_logits``, ``loss_loc``), so every term
has its own training curve. Ops are built once here; the detector family is resolved on the first call.

A part's value is the sum over its pairs (e.g. FPN levels) of ``distance(cascade(s), cascade(t))``. When the
cascade ends with position-wise ops and the distance is a mean of per-position values, consecutive pairs with the
same batch and channel sizes run that end of the cascade and the distance ONCE, on their positions flattened and
concatenated, each position weighted by ``1 / its pair's count``: the same sum (up to float rounding) in a few
large tensor ops instead of one small op chain per level (on small maps, per-op overhead dominated the terms).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from .context import DistillContext
from .errors import ConfigError
from .genome import Genome, Term
from .families import DetectorFamily, family_of
from .knowledge import INPUTS
from .transforms import cascade_pair


class SearchedTerm(nn.Module):
    """One knowledge input's term: cascade + distance + weight over the input's parts."""

    def __init__(self, term: Term, options: Optional[Mapping] = None):
        super().__init__()
        self.term = term
        # the term's own input parameters (genes, e.g. the cross point) over the config's fixed input options
        self.knowledge = INPUTS[term.input](**{**dict(options or {}), **term.input_params})
        try:
            self.cascade = nn.ModuleList(op.build('transform') for op in term.transforms)
            self.distance = term.distance.build('distance')
        except (TypeError, ValueError) as exc:
            raise ConfigError(f'genome term {term.input!r}: cannot build its ops ({exc})') from None
        # pairings that are wrong whatever the search space (the space's own choices are search/space.py's)
        if term.group not in type(self.distance).groups:
            raise ConfigError(f'genome term {term.input!r}: distance {term.distance.name!r} is not defined for '
                              f'{term.group} knowledge')
        bad = {op.name for op in term.transforms} & type(self.distance).incompatible_after
        if bad:
            raise ConfigError(f'genome term {term.input!r}: distance {term.distance.name!r} is ill-posed after '
                              f'{sorted(bad)}')
        if term.group == 'localization' and term.transforms:
            raise ConfigError(f'genome term {term.input!r}: localization compares decoded boxes and takes no '
                              f'transforms')
        # the cascade's position-wise tail (after its last op that mixes positions) can run on fused levels;
        # with two random ops, fusing would change the order of their draws, hence of the masks; and fused maps
        # have a detached teacher side, which would leave an op's trainable teacher-side block untrained
        # (user ops without the flags count as mixing positions and drawing no random numbers)
        split = max((i + 1 for i, op in enumerate(self.cascade) if not getattr(op, 'positionwise', False)),
                    default=0)
        self._prefix, self._suffix = tuple(self.cascade[:split]), tuple(self.cascade[split:])
        self.fuse_levels = (bool(getattr(self.distance, 'positionwise', False)) and
                            sum(bool(getattr(op, 'stochastic', False)) for op in self.cascade) <= 1 and
                            not any(getattr(op, 'learnable', False) for op in self.cascade))

    def bind_features(self, channels: int, num_levels: int) -> None:
        """Size the trainable parts of the cascade's ops (see ``DetectionDistiller``)."""
        for op in self.cascade:
            if hasattr(op, 'bind_features'):
                op.bind_features(channels, num_levels)

    def forward(self, ctx: DistillContext, family: DetectorFamily) -> Dict[str, Tensor]:
        losses = {}
        concatenated: Dict[tuple, Tuple[Tensor, Tensor]] = {}   # shared by parts that mask the same pairs
        for part in self.knowledge.parts(ctx, family, self.term.distance.name):
            total = self.part_value(part.pairs, part.masks, concatenated)
            if total is None:   # nothing to distil this step (e.g. no GT boxes): a zero that keeps the graph
                total = sum(f.sum() for f in ctx.student_feats) * 0.0
            losses[f'loss_{part.key}'] = total * (self.term.weight * part.factor)
        return losses

    def part_value(self, pairs: Sequence[Tuple[Tensor, Tensor]], masks: Optional[Sequence[Tensor]] = None,
                   concatenated: Optional[Dict] = None) -> Optional[Tensor]:
        """``sum_i distance(cascade(s_i * m_i), cascade(t_i * m_i))`` (None without pairs; no masks: m = 1),
        fusing levels where it can. ``concatenated``: a per-step memo of fused pair runs (see ``Part.masks``)."""
        masks = list(masks) if masks is not None else [None] * len(pairs)
        if not self.fuse_levels or len(pairs) < 2:
            return _sum(self.distance(*cascade_pair(self.cascade, *pair, level=level, mask=mask))
                        for level, (pair, mask) in enumerate(zip(pairs, masks)))
        if self._prefix:   # the masks go before (or into) the per-map head of the cascade
            pairs = [cascade_pair(self._prefix, *pair, level=level, mask=mask)
                     for level, (pair, mask) in enumerate(zip(pairs, masks))]
            masks, concatenated = [None] * len(pairs), None
        values = []
        for run in _fusable_runs(pairs):   # consecutive runs, so random draws keep their order
            if run.stop - run.start == 1:
                s, t = cascade_pair(self._suffix, *pairs[run.start], level=run.start, mask=masks[run.start])
                values.append(self.distance(s, t))
            else:
                values.append(self._fused_value(pairs[run], masks[run], concatenated))
        return _sum(values)

    def _fused_value(self, run: Sequence[Tuple[Tensor, Tensor]], masks: Sequence[Optional[Tensor]],
                     concatenated: Optional[Dict]) -> Tensor:
        sizes = [math.prod(s.shape[2:]) for s, _ in run]
        student, teacher = _concatenated(run, concatenated)
        # the part's masks and the cascade's leading per-position scalings (the random mask) are folded into one
        # N x 1 x P factor: one full-size multiply per side instead of one per factor
        factor = None
        if masks[0] is not None:   # a part masks all its pairs or none
            factor = torch.cat([m.flatten(2) for m in masks], 2).to(student.dtype)
        suffix = list(self._suffix)
        while suffix and hasattr(suffix[0], 'fused_scaling'):
            scaling = suffix.pop(0).fused_scaling(student, sizes)
            factor = scaling if factor is None else factor * scaling
        if factor is not None:
            student, teacher = student * factor, teacher * factor
        for op in suffix:
            student, teacher = op.forward_fused(student, teacher, sizes)
        values = self.distance.elementwise(student, teacher)
        # each position's total first (a reduction), then its map's weight: no full-size weighted copy
        totals = values.sum(dim=tuple(range(values.dim() - 1))) if values.dim() > 1 else values
        rows = values.numel() // max(values.shape[-1], 1)   # the values of one position
        weights = torch.cat([values.new_full((size,), 1.0 / (rows * size)) for size in sizes])
        return torch.dot(totals, weights)


def _concatenated(run: Sequence[Tuple[Tensor, Tensor]], memo: Optional[Dict]) -> Tuple[Tensor, Tensor]:
    """Both sides' maps flattened and concatenated along positions (teacher detached); memoised per step by the
    identity of the maps (the memo holds them, so an id cannot be reused while it is alive)."""
    key = tuple(id(x) for pair in run for x in pair)
    if memo is not None and key in memo:
        return memo[key][1]
    fused = (torch.cat([s.flatten(2) for s, _ in run], 2), torch.cat([t.detach().flatten(2) for _, t in run], 2))
    if memo is not None:
        memo[key] = (run, fused)
    return fused


def _sum(values) -> Optional[Tensor]:
    total = None
    for value in values:
        total = value if total is None else total + value
    return total


def _fusable_runs(pairs: Sequence[Tuple[Tensor, Tensor]]) -> List[slice]:
    """Index ranges of consecutive pairs that can be concatenated along flattened spatial dims: same N, C, dtype
    and device on both sides, at least one spatial dim, student and teacher of the same shape."""
    def signature(pair):
        s, t = pair
        if s.dim() < 3 or s.shape != t.shape:
            return None
        return tuple(s.shape[:2]), s.dtype, t.dtype, s.device
    runs: List[slice] = []
    previous = None
    for i, pair in enumerate(pairs):
        key = signature(pair)
        if runs and key is not None and key == previous:
            runs[-1] = slice(runs[-1].start, i + 1)
        else:
            runs.append(slice(i, i + 1))
        previous = key
    return runs


@MODELS.register_module()
class SearchedDistillLoss(nn.Module):
    """The distillation loss of a genome (see ``distill_core.genome``).

    Args:
        genome: a ``Genome``, its dict or its JSON text.
        input_options: per knowledge input, fixed options of its extractor, e.g.
            ``{'localization': {'score_thr': 0.3}, 'instance': {'roi_size': 7}}``.
    """

    def __init__(self, genome: Union[Genome, Mapping, str],
                 input_options: Optional[Mapping[str, Mapping]] = None):
        super().__init__()
        self.genome = Genome.parse(genome)
        input_options = dict(input_options or {})
        unknown = set(input_options) - set(INPUTS)
        if unknown:
            raise ConfigError(f'SearchedDistillLoss.input_options: unknown input(s) {sorted(unknown)}')
        self.terms = nn.ModuleDict({t.input: SearchedTerm(t, input_options.get(t.input))
                                    for t in self.genome.active_terms})
        self._family: Optional[DetectorFamily] = None   # the student's, once the pair is checked

    def bind_features(self, channels: int, num_levels: int) -> None:
        """Called by the distiller once it knows the (teacher) feature channels and the number of levels: ops
        with trainable parts (``context``, ``generative``) build them, before the optimizer collects them."""
        for term in self.terms.values():
            term.bind_features(channels, num_levels)

    def student_recorders_for(self, student: nn.Module) -> Dict[str, str]:
        """Student submodules whose calls the distiller must record (two-stage RoI logits, crossed head towers)."""
        if not any(term.knowledge.uses_recorders for term in self.terms.values()):
            return {}
        family = self._family or self._check_pair(family_of(student), family_of(student))   # teacher unknown here
        recorders: Dict[str, str] = {}
        for term in self.terms.values():
            recorders.update(term.knowledge.student_recorders(student, family))
        return recorders

    def bind_detectors(self, student: nn.Module, teacher: nn.Module) -> None:
        """Check, when the distiller is built, that every term serves this (teacher, student) family pair."""
        self._family = self._check_pair(family_of(teacher), family_of(student))

    def _check_pair(self, teacher: DetectorFamily, student: DetectorFamily) -> DetectorFamily:
        """The student's family, once every term is known to serve the pair."""
        pair = student.name if teacher is student else f'the pair {teacher.name} -> {student.name}'
        for term in self.terms.values():
            problem = type(term.knowledge).pair_problem(teacher, student)
            if problem:
                raise ConfigError(f'genome term {term.term.input!r} is not defined for {pair}: {problem}')
        return student

    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        if self._family is None:
            self._family = self._check_pair(ctx.teacher_family, ctx.student_family)
        losses: Dict[str, Tensor] = {}
        for term in self.terms.values():
            losses.update(term(ctx, self._family))
        return losses

    def extra_repr(self) -> str:
        return f'genome={self.genome.formula()!r}'
