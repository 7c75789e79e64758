"""``SearchedDistillLoss``: the loss a genome describes, as a step-wise distillation loss.

Config: ``dict(name='searched', loss=dict(type='SearchedDistillLoss', genome=<Genome | dict | JSON>))``.
Called with the step's ``DistillContext``, it returns one entry per enabled term part
(``loss_global``, ``loss_fg``, ``loss_bg``, ``loss_instance``, ``loss_logits``, ``loss_loc``), so every term
has its own training curve. Ops are built once here; the detector family is resolved on the first call.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from .context import DistillContext
from .errors import ConfigError
from .genome import Genome, Term
from .knowledge import INPUTS, DetectorFamily, family_of
from .transforms import cascade_pair


class SearchedTerm(nn.Module):
    """One knowledge input's term: cascade + distance + weight over the input's parts."""

    def __init__(self, term: Term, options: Optional[Mapping] = None):
        super().__init__()
        self.term = term
        self.knowledge = INPUTS[term.input](**dict(options or {}))
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

    def forward(self, ctx: DistillContext, family: DetectorFamily) -> Dict[str, Tensor]:
        losses = {}
        for part in self.knowledge.parts(ctx, family, self.term.distance.name):
            total = None
            for student, teacher in part.pairs:
                s, t = cascade_pair(self.cascade, student, teacher)
                value = self.distance(s, t)
                total = value if total is None else total + value
            if total is None:   # nothing to distil this step (e.g. no GT boxes): a zero that keeps the graph
                total = sum(f.sum() for f in ctx.student_feats) * 0.0
            losses[f'loss_{part.key}'] = total * (self.term.weight * part.factor)
        return losses


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
        self._family: Optional[DetectorFamily] = None

    def student_recorders_for(self, student: nn.Module) -> Dict[str, str]:
        """Student submodules whose calls the distiller must record (two-stage RoI logits)."""
        if 'logits' not in self.terms:
            return {}
        return family_of(student).student_recorders()

    def forward(self, ctx: DistillContext) -> Dict[str, Tensor]:
        if self._family is None:
            self._family = family_of(ctx.student)
        losses: Dict[str, Tensor] = {}
        for term in self.terms.values():
            losses.update(term(ctx, self._family))
        return losses

    def extra_repr(self) -> str:
        return f'genome={self.genome.formula()!r}'
