"""Evolution operators over real genomes: the :class:`~search.evolution.SearchSpaceOps` adapters of both stages.

Stage 1 (:class:`Stage1Ops`, one per knowledge input): a genome holds one enabled term; its genes are the op of
each cascade slot, each op's searchable parameters (temperature, mask ratio, ...), the distance and its
parameters, the input's own parameters (the cross point of ``cross_head``) and the weight from the stage-1 options
of the input's group. An input the detector family cannot serve has no stage-1 stream (an error, with the reason,
when the search config names it). Generation 0 starts from the published methods' formulations of the input
(``methods`` in the space: PKD, MGD, FGD's focal imitation) at their exact weights, then the DetKDS release's
(weights moved to the grid).

Weights come in units: the option grids suit the release's losses (means over normalised features), while a
published method's distance may be a per-sample sum (FGD, MGD: ``sse``) whose weight is orders of magnitude
smaller. A published method's weight is therefore the unit of its distance's weights for that input
(``weight_unit``): the grid scaled by it. The method's genome keeps its exact weight; a term whose distance changes
keeps its weight's position in the grid, on the new distance's scale.

Stage 2 (:class:`Stage2Ops`): the stage-1 winners' formulations are fixed; the genes are one weight per term from
the stage-2 options of its input (scaled by the winner's unit), where 0 switches the term off (at least one term
stays on), and the training strategy (the space's ``strategy`` genes: inherit the teacher's neck/head, warm-up and
decay of the distillation weight). Its seeds hold each published genome's combination and strategy.

Every offspring is checked with ``Space.term_problem`` (pairing rules such as no ``kl`` after ``logsoftmax_*``,
distances allowed for the group and detector family); an invalid draw is repaired (a new distance compatible with
the cascade) or redrawn, a bounded number of times, before falling back to a copy of the parent, which the
controller's duplicate check then mutates again. All randomness comes from the ``rng`` argument.
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from distill_core.errors import ConfigError
from distill_core.genome import Genome, OpSpec, Term, TrainingStrategy, op_defaults
from search.space import Family, Space

MAX_REDRAWS = 50


def nearest_option(value: float, options: Sequence[float]) -> float:
    """The option closest to ``value`` on a log scale (weights span decades); 0 only matches 0."""
    positive = [o for o in options if o > 0]
    if value <= 0:
        return 0.0 if 0 in options else min(positive)
    return min(positive, key=lambda o: (abs(math.log(o / value)), o)) if positive else 0.0


def weight_unit(weight: float, grid: Sequence[float]) -> float:
    """1 for a weight of the option grid; else the unit whose scaled grid holds it (the weight over the grid's
    1, or over its first positive option): a published method's weight on another scale."""
    if weight in grid or weight <= 0:
        return 1.0
    reference = 1.0 if 1.0 in grid else min(o for o in grid if o > 0)
    return weight / reference


def scaled_grid(grid: Sequence[float], unit: float) -> Tuple[float, ...]:
    return tuple(grid) if unit == 1.0 else tuple(o * unit for o in grid)


class _KeyCache:
    """``Genome.key()`` canonicalises and hashes (registry look-ups): memoise it per genome."""

    def __init__(self):
        self._keys: Dict[Genome, str] = {}

    def key(self, genome: Genome) -> str:
        key = self._keys.get(genome)
        if key is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            key = self._keys[genome] = genome.key()
        return key


class Stage1Ops(_KeyCache):
    """Formulation search of one knowledge input (a genome with exactly that one enabled term)."""

    def __init__(self, space: Space, input: str, family: Family = None):
        super().__init__()
        if input not in space.inputs:
            raise ConfigError(f'{space.source}: knowledge input {input!r} is not in the search space '
                              f'(inputs: {list(space.inputs)})')
        problem = space.input_problem(input, family)
        if problem:
            raise ConfigError(f'{space.source}: {problem}')
        self.space, self.input, self.family = space, input, family
        self.tables = space.slot_tables(input)
        self.weights = space.weight_options(input, 1)
        # distance -> unit of its weights: a published method's weight off the grid (the first method's, if two
        # share a distance); every other distance keeps the plain grid
        self.units: Dict[str, float] = {}
        for term in space.method_terms(input):
            unit = weight_unit(term.weight, self.weights)
            if unit != 1.0:
                self.units.setdefault(term.distance.name, unit)

    def weight_grid(self, distance: str) -> Tuple[float, ...]:
        """The stage-1 weight options of a term with this distance."""
        return scaled_grid(self.weights, self.units.get(distance, 1.0))

    def on_scale(self, term: Term) -> Term:
        """``term`` with its weight on its distance's grid: a weight from another distance's grid (after a
        mutation or crossover of the distance) keeps its position in the grid."""
        grid = self.weight_grid(term.distance.name)
        if term.weight in grid:
            return term
        unit = next((u for u in self.units.values() if term.weight in scaled_grid(self.weights, u)), 1.0)
        position = nearest_option(term.weight / unit, self.weights)
        return term.replace(weight=position * self.units.get(term.distance.name, 1.0))

    # ------------------------------------------------------------------------------ helpers
    def problem(self, genome: Genome) -> Optional[str]:
        """Why ``genome`` is not a stage-1 genome of this input in this space, or None."""
        if len(genome.terms) != 1 or genome.terms[0].input != self.input or not genome.terms[0].active:
            return f'a stage-1 genome of {self.input!r} has exactly one active {self.input!r} term'
        term = genome.terms[0]
        grid = self.weight_grid(term.distance.name)
        if term.weight not in grid:
            return f'weight {term.weight:g} is not a stage-1 option of distance {term.distance.name!r} {list(grid)}'
        return self.space.term_problem(term, self.family)

    def _genome(self, term: Term) -> Optional[Genome]:
        genome = Genome((term,))
        return genome if self.problem(genome) is None else None

    def _repaired(self, term: Term, rng: random.Random) -> Optional[Genome]:
        """``term`` as a genome, with a new compatible distance if the cascade rules out the current one, and its
        weight on its distance's scale."""
        genome = self._genome(self.on_scale(term))
        if genome is None and term.distance.name not in self.space.distances_for(self.input, term.transforms,
                                                                                  self.family):
            distance = self.space.sample_distance(self.input, term.transforms, rng, self.family)
            if distance is not None:
                genome = self._genome(self.on_scale(term.replace(distance=distance)))
        return genome

    @staticmethod
    def _param_value(op: OpSpec, param: str, kind: str) -> Any:
        kwargs = op.kwargs
        return kwargs[param] if param in kwargs else op_defaults(op.name, kind).get(param)

    def _with_param(self, op: OpSpec, param: str, kind: str, rng: random.Random) -> OpSpec:
        current = self._param_value(op, param, kind)
        options = [v for v in self.space.param_options(op.name)[param] if v != current]
        return OpSpec(op.name, tuple({**op.kwargs, param: rng.choice(options)}.items())) if options else op

    def _genes(self, term: Term) -> List[Tuple]:
        """The mutable genes of ``term``: only those with an alternative value."""
        genes: List[Tuple] = []
        for i, (op, table) in enumerate(zip(term.transforms, self.tables)):
            if len(table) > 1:
                genes.append(('op', i))
            genes += [('op_param', i, p) for p, v in sorted(self.space.param_options(op.name).items()) if len(v) > 1]
        if len(self.space.distances_for(self.input, term.transforms, self.family)) > 1:
            genes.append(('distance',))
        genes += [('distance_param', p) for p, v in sorted(self.space.param_options(term.distance.name).items())
                  if len(v) > 1]
        genes += [('input_param', p) for p, v in sorted(self.space.input_param_options(self.input).items())
                  if len(v) > 1]
        if len(self.weights) > 1:
            genes.append(('weight',))
        return genes

    def _mutate_gene(self, term: Term, gene: Tuple, rng: random.Random) -> Term:
        kind = gene[0]
        if kind == 'op':
            i = gene[1]
            name = rng.choice([n for n in self.tables[i] if n != term.transforms[i].name])
            ops = list(term.transforms)
            ops[i] = self.space.sample_params(name, rng)
            return term.replace(transforms=tuple(ops))
        if kind == 'op_param':
            i, param = gene[1:]
            ops = list(term.transforms)
            ops[i] = self._with_param(ops[i], param, 'transform', rng)
            return term.replace(transforms=tuple(ops))
        if kind == 'distance':
            allowed = [d for d in self.space.distances_for(self.input, term.transforms, self.family)
                       if d != term.distance.name]
            return term.replace(distance=self.space.sample_params(rng.choice(allowed), rng))
        if kind == 'distance_param':
            return term.replace(distance=self._with_param(term.distance, gene[1], 'distance', rng))
        if kind == 'input_param':
            param = gene[1]
            current = term.input_params[param]
            options = [v for v in self.space.input_param_options(self.input)[param] if v != current]
            return term.replace(params=tuple({**dict(term.params), param: rng.choice(options)}.items()))
        return term.replace(weight=rng.choice([w for w in self.weight_grid(term.distance.name) if w != term.weight]))

    # ------------------------------------------------------------------------- SearchSpaceOps
    def sample(self, rng: random.Random) -> Genome:
        for _ in range(MAX_REDRAWS):
            term = self.space.sample_term(self.input, rng, stage=1, family=self.family)
            genome = self._genome(self.on_scale(term))
            if genome is not None:
                return genome
        raise ConfigError(f'{self.space.source}: no valid {self.input!r} formulation in {MAX_REDRAWS} draws')

    def mutate(self, genome: Genome, rng: random.Random) -> Genome:
        """Change one gene (a second one with probability 1/4) and repair the distance if needed."""
        for _ in range(MAX_REDRAWS):
            term = genome.terms[0]
            for _change in range(2 if rng.random() < 0.25 else 1):
                genes = self._genes(term)
                if genes:
                    term = self._mutate_gene(term, rng.choice(genes), rng)
            child = self._repaired(term, rng)
            if child is not None:
                return child
        return genome

    def crossover(self, a: Genome, b: Genome, rng: random.Random) -> Genome:
        """Uniform crossover of slots (op with its parameters), distance (with its parameters), weight and the
        input's own parameters."""
        ta, tb = a.terms[0], b.terms[0]
        for _ in range(MAX_REDRAWS):
            ops = tuple(x if rng.random() < 0.5 else y for x, y in zip(ta.transforms, tb.transforms))
            distance = ta.distance if rng.random() < 0.5 else tb.distance
            weight = ta.weight if rng.random() < 0.5 else tb.weight
            params = tuple((k, v if rng.random() < 0.5 else tb.input_params[k]) for k, v in ta.input_params.items())
            child = self._repaired(Term(self.input, True, ops, distance, weight, params), rng)
            if child is not None:
                return child
        return a

    def seeds(self) -> List[Genome]:
        """The published methods' formulations of this input at their exact weights, then each formulation of
        the DetKDS release once, at the weight of the first pair using it moved to the nearest stage-1 option
        (the release tuned its weights per pair, outside the searched grids: detkds.md defect 32; the weight gene
        searches the rest). Those outside this space or detector family are skipped. Strategies are stage 2's."""
        terms = [t.replace(enabled=True) for t in self.space.method_terms(self.input)]
        terms += [t.replace(enabled=True, weight=nearest_option(t.weight, self.weights))
                  for t in self.space.published_terms(self.input)]
        seeds: Dict[str, Genome] = {}
        formulations = set()
        for term in terms:
            genome = self._genome(term)
            formulation = Genome((term.replace(weight=1.0),)).key()
            if genome is not None and formulation not in formulations:
                formulations.add(formulation)
                seeds[self.key(genome)] = genome
        return list(seeds.values())


class Stage2Ops(_KeyCache):
    """Weight and strategy search over the stage-1 winners: one weight gene per term (the stage-2 options of its
    input, scaled by the unit of the winner's weight), and the space's training-strategy genes.

    ``allow_disable`` adds weight 0 (term off) to inputs whose stage-2 options lack it: stage 1 only shows that a
    term helps alone, and a combination may be better without it. At least one term stays on.
    ``default_strategy``: what stage-1 genomes were trained with (the proxy's), the strategy of the seeds that
    are not a published genome's. A genome with that strategy carries none (it trains the same way), so that a
    combination equal to a stage-1 genome has its key and reuses its result instead of training again.
    """

    def __init__(self, space: Space, winners: Mapping[str, Genome], allow_disable: bool = True,
                 default_strategy: Optional[TrainingStrategy] = None):
        super().__init__()
        if not winners:
            raise ValueError('stage 2 needs at least one stage-1 winner')
        self.space = space
        self.base: Tuple[Term, ...] = tuple(winners[name].terms[0] for name in winners)
        self.options: Dict[str, Tuple[float, ...]] = {}
        for term in self.base:
            unit = weight_unit(term.weight, space.weight_options(term.input, 1))
            options = scaled_grid(space.weight_options(term.input, 2), unit)
            if allow_disable and 0.0 not in options and len(winners) > 1:
                options = (0.0,) + options
            self.options[term.input] = options
        self.strategy_genes = {gene: options for gene, options in space.strategy.items() if len(options) > 1}
        default = default_strategy or TrainingStrategy()
        self.default_strategy = default if space.strategy else None
        if space.strategy and space.strategy_problem(default):
            # the proxy's own recipe must stay reachable: stage 1 was trained with it
            raise ConfigError(f'{space.source}: the proxy trains stage 1 with {default.formula()}, which the '
                              f'space\'s strategy options exclude: {space.strategy_problem(default)}')

    def problem(self, genome: Genome) -> Optional[str]:
        if [t.input for t in genome.terms] != [t.input for t in self.base]:
            return f'a stage-2 genome has one term per winner: {[t.input for t in self.base]}'
        if not genome.active_terms:
            return 'every term is switched off'
        for term, base in zip(genome.terms, self.base):
            if term.replace(weight=base.weight) != base:
                return f'{term.input}: formulation differs from the stage-1 winner'
            if term.weight not in self.options[term.input]:
                return f'{term.input}: weight {term.weight:g} is not a stage-2 option {list(self.options[term.input])}'
            problem = self.space.term_problem(term)
            if problem:
                return problem
        if genome.strategy is not None and genome.strategy == self.default_strategy:
            return 'the proxy\'s strategy is written as no strategy'
        return self.space.strategy_problem(genome.strategy)

    def _genome(self, weights: Sequence[float], strategy: Optional[TrainingStrategy]) -> Optional[Genome]:
        if not any(w > 0 for w in weights):
            return None
        if strategy == self.default_strategy:
            strategy = None
        return Genome(tuple(t.replace(weight=float(w)) for t, w in zip(self.base, weights)), strategy)

    def _strategy_of(self, genome: Genome) -> Optional[TrainingStrategy]:
        return genome.strategy or self.default_strategy

    @staticmethod
    def _strategy_with(strategy: Optional[TrainingStrategy], **genes) -> Optional[TrainingStrategy]:
        return dataclasses.replace(strategy, **genes) if strategy is not None and genes else strategy

    def sample(self, rng: random.Random) -> Genome:
        strategy = self._strategy_with(self.default_strategy, **{gene: rng.choice(options)
                                                                  for gene, options in self.strategy_genes.items()})
        for _ in range(MAX_REDRAWS):
            genome = self._genome([rng.choice(self.options[t.input]) for t in self.base], strategy)
            if genome is not None:
                return genome
        raise ConfigError('stage 2: every sampled weight combination switches all terms off')

    def mutate(self, genome: Genome, rng: random.Random) -> Genome:
        """Move one gene (a term's weight or a strategy gene) to another option (a second one with probability
        1/4)."""
        genes = [('weight', i) for i in range(len(self.base))] + [('strategy', g) for g in self.strategy_genes]
        for _ in range(MAX_REDRAWS):
            weights, strategy = [t.weight for t in genome.terms], self._strategy_of(genome)
            for kind, which in rng.sample(genes, 2 if rng.random() < 0.25 and len(genes) > 1 else 1):
                if kind == 'weight':
                    options = [w for w in self.options[self.base[which].input] if w != weights[which]]
                    if options:
                        weights[which] = rng.choice(options)
                else:
                    current = getattr(strategy, which)
                    strategy = self._strategy_with(strategy, **{which: rng.choice(
                        [v for v in self.strategy_genes[which] if v != current])})
            child = self._genome(weights, strategy)
            if child is not None:
                return child
        return genome

    def crossover(self, a: Genome, b: Genome, rng: random.Random) -> Genome:
        for _ in range(MAX_REDRAWS):
            weights = [x.weight if rng.random() < 0.5 else y.weight for x, y in zip(a.terms, b.terms)]
            first, second = self._strategy_of(a), self._strategy_of(b)
            strategy = self._strategy_with(first, **{
                gene: getattr(first if rng.random() < 0.5 else second, gene) for gene in self.strategy_genes})
            child = self._genome(weights, strategy)
            if child is not None:
                return child
        return a

    def seeds(self) -> List[Genome]:
        """All terms at their stage-1 weights and all at 1 (the release's default gammas), with the proxy's
        strategy; then each published genome's combination with its strategy: a term whose formulation is the
        published one at the published weight, a winner the published genome also distils at its stage-1 weight,
        the other terms off where allowed. Weights are moved to the nearest option."""
        combos: List[Tuple[Dict[str, float], Optional[TrainingStrategy]]] = [
            ({t.input: t.weight for t in self.base}, self.default_strategy),
            ({t.input: 1.0 * weight_unit(t.weight, self.space.weight_options(t.input, 1)) for t in self.base},
             self.default_strategy)]
        for published in self.space.named_genomes().values():
            used = {t.input: t for t in published.active_terms}
            if not any(t.input in used for t in self.base):
                continue
            weights = {}
            for term in self.base:
                mine = used.get(term.input)
                same = mine is not None and Genome((mine,)).key() == Genome((term.replace(weight=mine.weight),)).key()
                weights[term.input] = mine.weight if same else (term.weight if mine is not None else 0.0)
            strategy = published.strategy if self.default_strategy is not None else None
            if strategy is not None and self.space.strategy_problem(strategy):
                strategy = self.default_strategy
            combos.append((weights, strategy or self.default_strategy))
        seeds: Dict[str, Genome] = {}
        for combo, strategy in combos:
            genome = self._genome([nearest_option(combo[t.input], self.options[t.input]) for t in self.base],
                                  strategy)
            if genome is not None:
                seeds.setdefault(self.key(genome), genome)
        return list(seeds.values())


def build_ops(space: Space, inputs: Optional[Sequence[str]] = None, family: Family = None,
              allow_disable: bool = True, default_strategy: Optional[TrainingStrategy] = None,
              ) -> Tuple[Dict[str, Stage1Ops], Callable[[Mapping[str, Genome]], Stage2Ops]]:
    """The adapters :class:`~search.evolution.Evolution` takes: stage-1 ops per input (the space's order unless
    ``inputs`` is given) and the stage-2 factory. ``default_strategy``: the proxy's training strategy."""
    stage1 = {name: Stage1Ops(space, name, family) for name in (inputs or space.offered_inputs(family))}
    return stage1, lambda winners: Stage2Ops(space, winners, allow_disable, default_strategy)
