"""The search space: ``search_space.yaml`` loaded, validated, and sampled.

``Space.default()`` reads the repository's ``search_space.yaml``; ``Space.from_file(path)`` a user's file that
restricts or extends it. Every problem (unknown key or op, a distance not allowed for a group, an empty table,
a bad weight or parameter) raises ``ConfigError`` naming the file and the key.

Sampling draws genomes that are valid by construction: ops from each slot's table, op parameters and the input's
own parameters (``input_params``, e.g. the cross point of ``cross_head``) from their option lists, only inputs the
detector family, or the (teacher, student) family pair of a heterogeneous search, can serve
(``KnowledgeInput.pair_problem``: e.g. ``cross_head`` needs a dense head with stacked-conv towers and one family on
both sides), a distance compatible with the drawn cascade (e.g. no ``kl`` after ``logsoftmax_*``, no ``ssim`` after
a flattening op) and with the detector families (``family_only``: both sides), and a weight from the stage's
options.
All randomness comes from the ``random.Random`` passed in, so a seeded controller reproduces its proposals.
"""
from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from distill_core.errors import ConfigError
from distill_core.genome import (FAMILY_SCOPED_INPUTS, INPUT_PARAMS, KNOWLEDGE_INPUTS, Genome, OpSpec, Term,
                                 TrainingStrategy, op_defaults)
from distill_core.registry import DISTANCES, TRANSFORMS

class _YamlLoader(yaml.SafeLoader):
    """YAML without the 1.1 booleans yes/no/on/off, so the op named ``no`` may be written bare."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != 'tag:yaml.org,2002:bool']
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_YamlLoader.add_implicit_resolver('tag:yaml.org,2002:bool', re.compile(r'^(?:true|True|TRUE|false|False|FALSE)$'),
                                  list('tTfF'))


def read_yaml(path: Union[str, Path]) -> Any:
    return yaml.load(Path(path).read_text(), Loader=_YamlLoader)


DEFAULT_SPACE_FILE = Path(__file__).resolve().parents[1] / 'search_space.yaml'
GROUPS = ('feature', 'response', 'localization')
TOP_KEYS = {'version', 'inputs', 'groups', 'family_only', 'params', 'input_params', 'weights', 'strategy', 'methods',
            'published'}
STRATEGY_GENES = ('inherit_neck_head', 'warmup', 'decay')


@dataclass(frozen=True)
class GroupSpace:
    slots: Tuple[Tuple[str, ...], ...]
    distances: Tuple[str, ...]


@dataclass
class Space:
    source: str
    inputs: Tuple[str, ...]
    groups: Dict[str, GroupSpace]
    params: Dict[str, Dict[str, Tuple[Any, ...]]] = field(default_factory=dict)
    input_params: Dict[str, Dict[str, Tuple[Any, ...]]] = field(default_factory=dict)
    family_only: Dict[str, Dict[str, Tuple[str, ...]]] = field(default_factory=dict)
    stage1_weights: Dict[str, Tuple[float, ...]] = field(default_factory=dict)
    stage2_weights: Dict[str, Tuple[float, ...]] = field(default_factory=dict)
    strategy: Dict[str, Tuple[Any, ...]] = field(default_factory=dict)   # stage-2 training-strategy genes
    methods: Dict[str, Genome] = field(default_factory=dict)     # published methods (pkd, mgd, ...) as genomes
    published: Dict[str, Genome] = field(default_factory=dict)   # the DetKDS release's genomes, per pair

    # ------------------------------------------------------------------ loading
    @classmethod
    def default(cls) -> 'Space':
        return cls.from_file(DEFAULT_SPACE_FILE)

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> 'Space':
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f'{path}: search space file not found')
        try:
            data = read_yaml(path)
        except yaml.YAMLError as exc:
            raise ConfigError(f'{path}: not valid YAML ({exc})') from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = '<dict>') -> 'Space':
        return _Loader(source).load(data)

    # ------------------------------------------------------------------ tables
    def group_of(self, input: str) -> GroupSpace:
        return self.groups[KNOWLEDGE_INPUTS[input]]

    def slot_tables(self, input: str) -> Tuple[Tuple[str, ...], ...]:
        return self.group_of(input).slots

    def param_options(self, op: str) -> Dict[str, Tuple[Any, ...]]:
        return self.params.get(op, {})

    def input_param_options(self, input: str) -> Dict[str, Tuple[Any, ...]]:
        """Option lists of the input's own searchable parameters (e.g. ``cross_head.cross_index``)."""
        return self.input_params.get(input, {})

    def input_problem(self, input: str, family: Family) -> Optional[str]:
        """Why ``input`` is not offered for the detector ``family`` or (teacher, student) family pair (None:
        offered, or a family unknown)."""
        teacher, student = family_pair(family)
        if student is None or (teacher == student and input not in FAMILY_SCOPED_INPUTS):
            return None
        from distill_core.families import FAMILIES   # heavy imports only for family-scoped inputs and pairs
        from distill_core.knowledge import INPUTS
        if teacher not in FAMILIES or student not in FAMILIES:
            return None
        problem = INPUTS[input].pair_problem(FAMILIES[teacher], FAMILIES[student])
        return f'input {input!r} is not offered for {family_label(family)}: {problem}' if problem else None

    def offered_inputs(self, family: Family = None) -> Tuple[str, ...]:
        """The space's inputs that the detector family (or teacher/student family pair) can serve."""
        return tuple(i for i in self.inputs if self.input_problem(i, family) is None)

    def dropped_inputs(self, family: Family = None) -> Dict[str, str]:
        """The space's inputs the family (pair) cannot serve, each with the reason."""
        return {i: problem for i in self.inputs for problem in [self.input_problem(i, family)] if problem}

    def weight_options(self, input: str, stage: int = 1) -> Tuple[float, ...]:
        if stage == 1:
            return self.stage1_weights[KNOWLEDGE_INPUTS[input]]
        if stage == 2:
            return self.stage2_weights[input]
        raise ValueError(f'stage must be 1 or 2, got {stage}')

    def distances_for(self, input: str, transforms: Sequence[OpSpec] = (),
                      family: Family = None) -> Tuple[str, ...]:
        """Distances of the input's group valid after ``transforms`` and for ``family`` (None: any family)."""
        group = KNOWLEDGE_INPUTS[input]
        names = {op.name for op in transforms}
        allowed = []
        for name in self.group_of(input).distances:
            if names & DISTANCES.get(name).incompatible_after:
                continue
            families = self.family_only.get(group, {}).get(name)
            if families is not None and (family is None or not _within(family, families)):
                continue
            allowed.append(name)
        return tuple(allowed)

    def size(self, input: str) -> int:
        """Number of formulations (cascade x distance, default parameters, no weights) for one input."""
        total = 0
        for cascade in itertools.product(*self.slot_tables(input)):
            total += len(self.distances_for(input, [OpSpec(n) for n in cascade], family='gfl'))
        return total

    # ------------------------------------------------------------------ sampling
    def sample_params(self, op: str, rng: random.Random) -> OpSpec:
        options = self.param_options(op)
        return OpSpec(op, tuple((k, rng.choice(v)) for k, v in sorted(options.items())))

    def sample_transforms(self, input: str, rng: random.Random) -> Tuple[OpSpec, ...]:
        return tuple(self.sample_params(rng.choice(table), rng) for table in self.slot_tables(input))

    def sample_distance(self, input: str, transforms: Sequence[OpSpec], rng: random.Random,
                        family: Family = None) -> Optional[OpSpec]:
        allowed = self.distances_for(input, transforms, family)
        return self.sample_params(rng.choice(allowed), rng) if allowed else None

    def sample_weight(self, input: str, rng: random.Random, stage: int = 1) -> float:
        return float(rng.choice(self.weight_options(input, stage)))

    def sample_input_params(self, input: str, rng: random.Random) -> Tuple[Tuple[str, Any], ...]:
        return tuple((k, rng.choice(v)) for k, v in sorted(self.input_param_options(input).items()))

    def sample_term(self, input: str, rng: random.Random, stage: int = 1,
                    family: Family = None) -> Term:
        if input not in self.inputs:
            raise ConfigError(f'{self.source}: input {input!r} is not in this space (inputs: {list(self.inputs)})')
        problem = self.input_problem(input, family)
        if problem:
            raise ConfigError(f'{self.source}: {problem}')
        for _ in range(100):
            transforms = self.sample_transforms(input, rng)
            distance = self.sample_distance(input, transforms, rng, family)
            if distance is not None:
                return Term(input, True, transforms, distance, self.sample_weight(input, rng, stage),
                            self.sample_input_params(input, rng))
        raise ConfigError(f'{self.source}: no valid distance for input {input!r} after 100 cascades '
                          f'(family {family!r}): check groups.{KNOWLEDGE_INPUTS[input]}.distances')

    def sample_genome(self, rng: random.Random, inputs: Optional[Sequence[str]] = None, stage: int = 1,
                      family: Family = None) -> Genome:
        return Genome(tuple(self.sample_term(i, rng, stage, family) for i in (inputs or self.offered_inputs(family))))

    def published_terms(self, input: str) -> List[Term]:
        """The distinct formulations of one input in the DetKDS release's genomes (by canonical form), in file
        order."""
        return _distinct_terms(self.published.values(), input)

    def method_terms(self, input: str) -> List[Term]:
        """The distinct formulations of one input in the published methods' genomes (``methods``), in file order."""
        return _distinct_terms(self.methods.values(), input)

    def named_genomes(self) -> Dict[str, Genome]:
        """Every published genome by name: the methods (``pkd``, ``mgd``, ``fgd_focal``, ...), then the DetKDS
        release's (``detkds/<pair>``)."""
        return {**self.methods, **{f'detkds/{pair}': genome for pair, genome in self.published.items()}}

    def published_name(self, genome: Genome, default_strategy: Optional[TrainingStrategy] = None) -> Optional[str]:
        """The name of the published genome that ``genome`` equals (same loss: same canonical terms), or None for
        a new formulation. Strategies are compared too when both sides have one (a genome without a strategy
        is trained with ``default_strategy``, e.g. the proxy's); a published genome without one matches any."""
        terms = Genome(genome.terms).key()
        strategy = genome.strategy or default_strategy
        for name, published in self.named_genomes().items():
            if Genome(published.terms).key() != terms:
                continue
            if published.strategy is None or strategy is None or published.strategy == strategy:
                return name
        return None

    def variant_of(self, genome: Genome) -> Optional[str]:
        """The name of the published genome whose terms ``genome`` computes with other weights (or another training
        strategy), or None: a search that only re-weights a published loss has not found a new formulation, and its
        answer says so."""
        shape = _unweighted_key(genome)
        return next((name for name, published in self.named_genomes().items()
                     if _unweighted_key(published) == shape), None)

    # ------------------------------------------------------------------ validation
    def term_problem(self, term: Term, family: Family = None) -> Optional[str]:
        """Why ``term`` is not in this space, or None."""
        if term.input not in self.inputs:
            return f'input {term.input!r} is not searched in this space'
        problem = self.input_problem(term.input, family)
        if problem:
            return problem
        tables = self.slot_tables(term.input)
        if len(term.transforms) != len(tables):
            return f'{term.input}: {len(term.transforms)} transforms for {len(tables)} cascade slot(s)'
        for i, (op, table) in enumerate(zip(term.transforms, tables), 1):
            if op.name not in table:
                return f'{term.input}: op {op.name!r} is not in slot {i} ({list(table)})'
            problem = _param_problem(op, 'transform')
            if problem:
                return f'{term.input}: {problem}'
        group = KNOWLEDGE_INPUTS[term.input]
        if term.distance.name not in self.group_of(term.input).distances:
            return (f'{term.input}: distance {term.distance.name!r} not allowed for the {group} group '
                    f'({list(self.group_of(term.input).distances)})')
        problem = _param_problem(term.distance, 'distance')
        if problem:
            return f'{term.input}: {problem}'
        bad_after = {op.name for op in term.transforms} & DISTANCES.get(term.distance.name).incompatible_after
        if bad_after:
            return f'{term.input}: distance {term.distance.name!r} is ill-posed after {sorted(bad_after)}'
        families = self.family_only.get(group, {}).get(term.distance.name)
        if families is not None and family is not None and not _within(family, families):
            return f'{term.input}: distance {term.distance.name!r} needs a detector family in {list(families)}'
        return None

    def strategy_problem(self, strategy: Optional[TrainingStrategy]) -> Optional[str]:
        """Why ``strategy`` is not one of this space's stage-2 strategies, or None (no strategy is always fine)."""
        if strategy is None:
            return None
        if not self.strategy:
            return 'this space searches no training strategy (no `strategy` section)'
        for gene in STRATEGY_GENES:
            value = getattr(strategy, gene)
            if value not in self.strategy[gene]:
                return f'strategy.{gene} = {value!r} is not an option {list(self.strategy[gene])}'
        return None

    def strategies(self) -> List[TrainingStrategy]:
        """Every combination of the strategy genes' options, first options first."""
        return [TrainingStrategy(**dict(zip(STRATEGY_GENES, values)))
                for values in itertools.product(*(self.strategy[gene] for gene in STRATEGY_GENES))]

    def validate(self, genome: Genome, family: Family = None) -> Genome:
        for term in genome.terms:
            problem = self.term_problem(term, family)
            if problem:
                raise ConfigError(f'genome not in the space of {self.source}: {problem}')
        problem = self.strategy_problem(genome.strategy)
        if problem:
            raise ConfigError(f'genome not in the space of {self.source}: {problem}')
        return genome


# A detector family name, a (teacher family, student family) pair of a heterogeneous search, or None (unknown).
Family = Union[None, str, Tuple[str, str]]


def family_pair(family: Family) -> Tuple[Optional[str], Optional[str]]:
    """(teacher family, student family): a single family stands for a homogeneous pair."""
    if family is None or isinstance(family, str):
        return family, family
    teacher, student = family
    return teacher, student


def family_label(family: Family) -> str:
    teacher, student = family_pair(family)
    return str(student) if teacher == student else f'{teacher} -> {student}'


def _within(family: Family, families: Sequence[str]) -> bool:
    """Whether both sides of the pair are among ``families`` (family-only distances compare both heads)."""
    return all(side is None or side in families for side in family_pair(family))


def _unweighted_key(genome: Genome) -> str:
    """The key of ``genome``'s active terms at weight 1 and without a strategy: equal for genomes that differ only
    in weights and training strategy."""
    return Genome(tuple(t.replace(weight=1.0) for t in genome.active_terms)).key()


def _distinct_terms(genomes, input: str) -> List[Term]:
    seen, terms = set(), []
    for genome in genomes:
        term = genome.term(input)
        if term is not None:
            key = Genome((term,)).key()
            if key not in seen:
                seen.add(key)
                terms.append(term)
    return terms


def _param_problem(op: OpSpec, kind: str) -> Optional[str]:
    try:
        op.canonical(kind)
    except ConfigError as exc:
        return str(exc)
    try:
        op.build(kind)
    except Exception as exc:   # the op's own check of its arguments (e.g. mask ratio >= 1)
        return f'{kind} {op.name!r} rejects {op.kwargs}: {exc}'
    return None


def _is_weight(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= 0)


class _Loader:
    """Validation of the file's structure; every error names ``source`` and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str):
        raise ConfigError(f'{self.source}: {key}: {message}')

    def mapping(self, value: Any, key: str) -> Dict:
        if not isinstance(value, Mapping):
            self.fail(key, f'expected a mapping, got {type(value).__name__}')
        return dict(value)

    def names(self, value: Any, key: str) -> Tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not value:
            self.fail(key, 'expected a non-empty list')
        if not all(isinstance(v, str) for v in value):
            self.fail(key, f'expected names, got {value}')
        if len(set(value)) != len(value):
            self.fail(key, f'duplicate entries in {value}')
        return tuple(value)

    def load(self, data: Any) -> Space:
        data = self.mapping(data, '<top level>')
        unknown = set(data) - TOP_KEYS
        if unknown:
            self.fail(sorted(unknown)[0], f'unknown key (known: {sorted(TOP_KEYS)})')
        for required in ('inputs', 'groups', 'weights'):
            if required not in data:
                self.fail(required, 'missing')
        inputs = self.names(data['inputs'], 'inputs')
        for name in inputs:
            if name not in KNOWLEDGE_INPUTS:
                self.fail('inputs', f'unknown knowledge input {name!r} (known: {list(KNOWLEDGE_INPUTS)})')
        groups = self.groups(self.mapping(data['groups'], 'groups'), inputs)
        params = self.params(self.mapping(data.get('params') or {}, 'params'), groups)
        input_params = self.input_params(self.mapping(data.get('input_params') or {}, 'input_params'))
        family_only = self.family_only(self.mapping(data.get('family_only') or {}, 'family_only'), groups)
        stage1, stage2 = self.weights(self.mapping(data['weights'], 'weights'), inputs)
        strategy = self.strategy(self.mapping(data.get('strategy') or {}, 'strategy'))
        space = Space(self.source, inputs, groups, params, input_params, family_only, stage1, stage2, strategy)
        space.methods = self.published(self.mapping(data.get('methods') or {}, 'methods'), space, 'methods')
        space.published = self.published(self.mapping(data.get('published') or {}, 'published'), space)
        return space

    def strategy(self, data: Dict) -> Dict[str, Tuple[Any, ...]]:
        """Options of the stage-2 training-strategy genes: all three or none (no strategy searched)."""
        if not data:
            return {}
        for gene in set(data) | set(STRATEGY_GENES):
            if gene not in STRATEGY_GENES:
                self.fail(f'strategy.{gene}', f'unknown gene (known: {list(STRATEGY_GENES)})')
            if gene not in data:
                self.fail(f'strategy.{gene}', 'missing (give all of inherit_neck_head, warmup, decay)')
        out = {}
        for gene in STRATEGY_GENES:
            values = data[gene]
            if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
                self.fail(f'strategy.{gene}', f'expected a non-empty list of distinct options, got {values!r}')
            for value in values:
                try:
                    TrainingStrategy(**{gene: value})
                except ConfigError as exc:
                    self.fail(f'strategy.{gene}', f'option {value!r}: {exc}')
            out[gene] = tuple(float(v) if gene == 'warmup' else v for v in values)
        return out

    def groups(self, data: Dict, inputs: Sequence[str]) -> Dict[str, GroupSpace]:
        groups = {}
        for name, spec in data.items():
            key = f'groups.{name}'
            if name not in GROUPS:
                self.fail(key, f'unknown knowledge group (known: {list(GROUPS)})')
            spec = self.mapping(spec, key)
            unknown = set(spec) - {'slots', 'distances'}
            if unknown:
                self.fail(f'{key}.{sorted(unknown)[0]}', 'unknown key (known: slots, distances)')
            slots = spec.get('slots')
            if not isinstance(slots, list):
                self.fail(f'{key}.slots', 'expected a list of op tables')
            tables = []
            for i, table in enumerate(slots):
                table = self.names(table, f'{key}.slots[{i}]')
                for op in table:
                    if TRANSFORMS.get(op) is None:
                        self.fail(f'{key}.slots[{i}]', f'unknown op {op!r} (registered: '
                                                       f'{sorted(TRANSFORMS.module_dict)})')
                tables.append(table)
            distances = self.names(spec.get('distances'), f'{key}.distances')
            for dist in distances:
                cls = DISTANCES.get(dist)
                if cls is None:
                    self.fail(f'{key}.distances', f'unknown distance {dist!r} (registered: '
                                                  f'{sorted(DISTANCES.module_dict)})')
                if name not in cls.groups:
                    self.fail(f'{key}.distances', f'distance {dist!r} is not allowed for the {name} group '
                                                  f'(only {sorted(cls.groups)})')
            groups[name] = GroupSpace(tuple(tables), distances)
        for input in inputs:
            if KNOWLEDGE_INPUTS[input] not in groups:
                self.fail('groups', f'input {input!r} needs the {KNOWLEDGE_INPUTS[input]!r} group')
        return groups

    def params(self, data: Dict, groups: Dict[str, GroupSpace]) -> Dict[str, Dict[str, Tuple]]:
        known_ops = {op for g in groups.values() for t in g.slots for op in t}
        known_distances = {d for g in groups.values() for d in g.distances}
        out = {}
        for op, options in data.items():
            key = f'params.{op}'
            if op in known_ops:
                kind = 'transform'
            elif op in known_distances:
                kind = 'distance'
            else:
                self.fail(key, 'op not used in any slot or distance list of this space')
            defaults = op_defaults(op, kind)
            options = self.mapping(options, key)
            out[op] = {}
            for param, values in options.items():
                if param not in defaults:
                    self.fail(f'{key}.{param}', f'{op!r} has no such parameter (it takes {sorted(defaults)})')
                if not isinstance(values, list) or not values:
                    self.fail(f'{key}.{param}', 'expected a non-empty list of options')
                for value in values:
                    problem = _param_problem(OpSpec(op, ((param, value),)), kind)
                    if problem:
                        self.fail(f'{key}.{param}', f'option {value!r}: {problem}')
                out[op][param] = tuple(values)
        return out

    def input_params(self, data: Dict) -> Dict[str, Dict[str, Tuple]]:
        out = {}
        for input, options in data.items():
            key = f'input_params.{input}'
            if input not in KNOWLEDGE_INPUTS:   # an input left out of `inputs` may keep its options (as stage2)
                self.fail(key, f'unknown knowledge input (known: {list(KNOWLEDGE_INPUTS)})')
            known = INPUT_PARAMS.get(input, {})
            out[input] = {}
            for param, values in self.mapping(options, key).items():
                if param not in known:
                    self.fail(f'{key}.{param}', f'{input!r} has no such parameter (it takes {sorted(known)})')
                if not isinstance(values, list) or not values:
                    self.fail(f'{key}.{param}', 'expected a non-empty list of options')
                for value in values:
                    problem = known[param].problem(value)
                    if problem:
                        self.fail(f'{key}.{param}', f'option {value!r}: {problem}')
                out[input][param] = tuple(values)
        return out

    def family_only(self, data: Dict, groups: Dict[str, GroupSpace]) -> Dict[str, Dict[str, Tuple[str, ...]]]:
        from distill_core.families import FAMILIES   # heavy import (mmcv ops) only when the key is used
        out = {}
        for group, rules in data.items():
            if group not in groups:
                self.fail(f'family_only.{group}', 'not a group of this space')
            out[group] = {}
            for dist, families in self.mapping(rules, f'family_only.{group}').items():
                key = f'family_only.{group}.{dist}'
                if dist not in groups[group].distances:
                    self.fail(key, f'distance not in groups.{group}.distances')
                families = self.names(families, key)
                for fam in families:
                    if fam not in FAMILIES:
                        self.fail(key, f'unknown detector family {fam!r} (known: {sorted(FAMILIES)})')
                out[group][dist] = families
        return out

    def weight_list(self, values: Any, key: str, allow_zero: bool) -> Tuple[float, ...]:
        if not isinstance(values, list) or not values:
            self.fail(key, 'expected a non-empty list of weights')
        for value in values:
            if not _is_weight(value):
                self.fail(key, f'bad weight {value!r}: weights are finite numbers >= 0')
            if value == 0 and not allow_zero:
                self.fail(key, 'weight 0 switches off the term stage 1 is searching')
        return tuple(float(v) for v in values)

    def weights(self, data: Dict, inputs: Sequence[str]):
        unknown = set(data) - {'stage1', 'stage2'}
        if unknown:
            self.fail(f'weights.{sorted(unknown)[0]}', 'unknown key (known: stage1, stage2)')
        stage1 = self.mapping(data.get('stage1'), 'weights.stage1')
        stage2 = self.mapping(data.get('stage2'), 'weights.stage2')
        out1, out2 = {}, {}
        needed_groups = {KNOWLEDGE_INPUTS[i] for i in inputs}
        for group, values in stage1.items():
            if group not in GROUPS:
                self.fail(f'weights.stage1.{group}', f'unknown group (known: {list(GROUPS)})')
            out1[group] = self.weight_list(values, f'weights.stage1.{group}', allow_zero=False)
        for group in needed_groups - set(out1):
            self.fail(f'weights.stage1.{group}', 'missing')
        for input, values in stage2.items():
            if input not in KNOWLEDGE_INPUTS:
                self.fail(f'weights.stage2.{input}', 'unknown knowledge input')
            out2[input] = self.weight_list(values, f'weights.stage2.{input}', allow_zero=True)
        for input in set(inputs) - set(out2):
            self.fail(f'weights.stage2.{input}', 'missing')
        return out1, out2

    def published(self, data: Dict, space: Space, section: str = 'published') -> Dict[str, Genome]:
        """Named genomes: ``name: {<input>: <term>, ..., strategy: {...} (optional)}``."""
        out = {}
        for name, terms in data.items():
            key = f'{section}.{name}'
            terms = self.mapping(terms, key)
            strategy = terms.pop('strategy', None)
            try:
                genome = Genome.from_dict({'terms': terms, 'strategy': strategy})
            except ConfigError as exc:
                self.fail(key, str(exc))
            for term in genome.terms:
                problem = space.term_problem(term)
                if problem:
                    self.fail(f'{key}.{term.input}', problem)
            if genome.strategy is not None and space.strategy:
                problem = space.strategy_problem(genome.strategy)
                if problem:
                    self.fail(f'{key}.strategy', problem)
            out[name] = genome
        return out
