"""``Genome``: the immutable description of one searched distiller.

A genome lists, per knowledge input, a term: whether it is enabled, its transform cascade (one op per slot),
its distance, its weight and, for inputs that have them, the input's own searchable parameters (``INPUT_PARAMS``,
e.g. the cross point of ``cross_head``). Ops are ``OpSpec(name, params)`` with names from
``TRANSFORMS``/``DISTANCES``. Stage-2 genomes also carry a ``TrainingStrategy`` (inherit the teacher's neck/head,
warm-up and decay of the distillation weight); without one, whoever trains the genome decides (the search
config's proxy section).

* ``to_json()`` / ``from_json()`` round-trip exactly (configs embed the JSON or the dict).
* ``canonical()`` is the form two genomes share when they provably compute the same loss: identity ops
  (``no``, ``scale_r1``) removed from cascades, op parameters completed with their defaults, numbers as floats,
  disabled or zero-weight terms dropped, terms in a fixed input order.
* ``key()`` is the sha256 of the canonical JSON (sorted keys): the same in every process and Python version.
* ``formula()`` is a one-line human-readable form, e.g. ``global: catt -> scale_r2 -> norm_N | l1 x6``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

from . import distances as _distances  # noqa: F401  (registers the distances)
from . import method_ops as _method_ops  # noqa: F401  (registers the published methods' ops)
from . import transforms as _transforms  # noqa: F401  (registers the transforms)
from .errors import ConfigError
from .registry import DISTANCES, TRANSFORMS
from .transforms import IDENTITY_OPS

# The knowledge inputs and their knowledge group (which decides the ops and distances allowed): DetKDS's five,
# CrossKD's crossed-head predictions and the mask head's response.
KNOWLEDGE_INPUTS: Dict[str, str] = {
    'global': 'feature',
    'fg_bg': 'feature',
    'instance': 'feature',
    'logits': 'response',
    'localization': 'localization',
    'cross_head': 'response',
    'mask': 'response',          # the RoI mask head's per-pixel mask probabilities (Mask R-CNN)
}

Scalar = Union[str, int, float, bool]


def _cross_index_problem(value: Scalar) -> Optional[str]:
    if value == 'auto' or (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
                           and value == int(value)):
        return None
    return f'cross_index must be "auto" or an integer >= 0, got {value!r}'


@dataclass(frozen=True)
class InputParam:
    default: Scalar
    problem: Callable[[Scalar], Optional[str]]   # why a value is invalid, or None


# Inputs that some detector families cannot serve (the reason: ``knowledge.INPUTS[name].family_problem``); the
# search space asks only about these, so that it needs the model-side modules for them alone.
FAMILY_SCOPED_INPUTS = frozenset({'cross_head', 'mask'})

# Searchable parameters of a knowledge input itself (genes of its term, not of an op), with their defaults.
# cross_head.cross_index: the head-tower position where the student crosses into the teacher's head; "auto" is
# CrossKD's published rule for the head (3 of 4 stacked convs for GFL/RetinaNet, 2 of 4 for FCOS).
INPUT_PARAMS: Dict[str, Dict[str, InputParam]] = {
    'cross_head': {'cross_index': InputParam('auto', _cross_index_problem)},
}


def _registry_class(name: str, registry, what: str):
    cls = registry.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f'unknown {what} {name!r}; known: {sorted(registry.module_dict)}')
    return cls


def op_defaults(name: str, kind: str = 'transform') -> Dict[str, Any]:
    """Constructor parameters (with defaults) of a registered op; ``kind`` is 'transform' or 'distance'."""
    registry = TRANSFORMS if kind == 'transform' else DISTANCES
    cls = _registry_class(name, registry, kind)
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items()
            if k != 'self' and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _canonical_value(value: Scalar) -> Scalar:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    raise ConfigError(f'op parameter value {value!r} must be a number, a string or a bool')


@dataclass(frozen=True)
class OpSpec:
    """A transform or distance by registry name, with its parameters as sorted ``(key, value)`` pairs."""
    name: str
    params: Tuple[Tuple[str, Scalar], ...] = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f'op name must be a non-empty string, got {self.name!r}')
        object.__setattr__(self, 'params', tuple(sorted((str(k), v) for k, v in dict(self.params).items())))

    @classmethod
    def of(cls, name: str, **params) -> 'OpSpec':
        return cls(name, tuple(params.items()))

    @classmethod
    def parse(cls, obj: Union[str, Mapping, 'OpSpec']) -> 'OpSpec':
        """From ``'catt'``, ``{'name': 'catt', 'params': {...}}`` or ``{'type': 'catt', 'temperature': 0.5}``."""
        if isinstance(obj, OpSpec):
            return obj
        if isinstance(obj, str):
            return cls(obj)
        if isinstance(obj, Mapping):
            obj = dict(obj)
            name = obj.pop('name', None) or obj.pop('type', None)
            params = dict(obj.pop('params', {}) or {})
            params.update(obj)
            return cls(name, tuple(params.items()))
        raise ConfigError(f'cannot read an op from {obj!r}')

    @property
    def kwargs(self) -> Dict[str, Scalar]:
        return dict(self.params)

    def build_cfg(self) -> Dict[str, Any]:
        return dict(type=self.name, **self.kwargs)

    def build(self, kind: str = 'transform'):
        """The op module. (``registry.get`` + call rather than ``registry.build``: the latter warns on every
        call under MMDetection's default scope, which these registries are not part of.)"""
        cls = _registry_class(self.name, TRANSFORMS if kind == 'transform' else DISTANCES, kind)
        return cls(**self.kwargs)

    def to_dict(self) -> Dict[str, Any]:
        return {'name': self.name, 'params': self.kwargs}

    def canonical(self, kind: str) -> 'OpSpec':
        defaults = op_defaults(self.name, kind)
        unknown = set(self.kwargs) - set(defaults)
        if unknown:
            raise ConfigError(f'{kind} {self.name!r} has no parameter(s) {sorted(unknown)}; '
                              f'it takes {sorted(defaults)}')
        full = {**defaults, **self.kwargs}
        return OpSpec(self.name, tuple((k, _canonical_value(v)) for k, v in full.items()))

    def label(self, kind: str) -> str:
        """``name`` or ``name(k=v)`` for parameters that differ from the op's defaults."""
        try:
            defaults = op_defaults(self.name, kind)
        except ConfigError:
            defaults = {}
        shown = [f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}'
                 for k, v in self.params if k not in defaults or _canonical_value(defaults[k]) != _canonical_value(v)]
        return f'{self.name}({", ".join(shown)})' if shown else self.name


@dataclass(frozen=True)
class Term:
    """One knowledge input's distillation term: ``weight * D(T_k(...T_1(s)), T_k(...T_1(t))))``."""
    input: str
    enabled: bool = True
    transforms: Tuple[OpSpec, ...] = ()
    distance: OpSpec = OpSpec('l1')
    weight: float = 1.0
    params: Tuple[Tuple[str, Scalar], ...] = ()   # the input's own parameters (INPUT_PARAMS), sorted pairs

    def __post_init__(self):
        if self.input not in KNOWLEDGE_INPUTS:
            raise ConfigError(f'unknown knowledge input {self.input!r}; known: {list(KNOWLEDGE_INPUTS)}')
        known = INPUT_PARAMS.get(self.input, {})
        params = dict(self.params)
        for key, value in params.items():
            if key not in known:
                raise ConfigError(f'{self.input}: unknown input parameter {key!r}; known: {sorted(known)}')
            problem = known[key].problem(value)
            if problem:
                raise ConfigError(f'{self.input}: {problem}')
        object.__setattr__(self, 'params', tuple(sorted(params.items())))
        object.__setattr__(self, 'transforms', tuple(OpSpec.parse(op) for op in self.transforms))
        object.__setattr__(self, 'distance', OpSpec.parse(self.distance))
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight < 0:
            raise ConfigError(f'{self.input}: weight must be a finite number >= 0, got {weight!r}')
        object.__setattr__(self, 'weight', float(weight))
        object.__setattr__(self, 'enabled', bool(self.enabled))

    @property
    def group(self) -> str:
        return KNOWLEDGE_INPUTS[self.input]

    @property
    def active(self) -> bool:
        return self.enabled and self.weight > 0

    def replace(self, **changes) -> 'Term':
        return dataclasses.replace(self, **changes)

    @property
    def input_params(self) -> Dict[str, Scalar]:
        """The input's parameters, defaults completed."""
        return {**{k: p.default for k, p in INPUT_PARAMS.get(self.input, {}).items()}, **dict(self.params)}

    def canonical(self) -> 'Term':
        ops = tuple(op.canonical('transform') for op in self.transforms if op.name not in IDENTITY_OPS)
        params = tuple((k, _canonical_value(v)) for k, v in self.input_params.items())
        return Term(self.input, True, ops, self.distance.canonical('distance'), self.weight, params)

    def to_dict(self) -> Dict[str, Any]:
        data = {'input': self.input, 'enabled': self.enabled,
                'transforms': [op.to_dict() for op in self.transforms],
                'distance': self.distance.to_dict(), 'weight': self.weight}
        if self.input in INPUT_PARAMS:   # only these inputs: the dicts (and keys) of the others stay as they were
            data['params'] = dict(self.params)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> 'Term':
        data = dict(data)
        unknown = set(data) - {'input', 'enabled', 'transforms', 'distance', 'weight', 'params'}
        if unknown:
            raise ConfigError(f'genome term: unknown key(s) {sorted(unknown)}')
        if 'input' not in data:
            raise ConfigError('genome term: missing key "input"')
        transforms = data.get('transforms', ())
        if isinstance(transforms, (str, Mapping)):
            raise ConfigError(f'{data["input"]}: transforms must be a list of ops')
        return cls(input=data['input'], enabled=data.get('enabled', True),
                   transforms=tuple(OpSpec.parse(op) for op in transforms),
                   distance=OpSpec.parse(data.get('distance', 'l1')), weight=data.get('weight', 1.0),
                   params=tuple(dict(data.get('params') or {}).items()))

    def formula(self) -> str:
        cascade = ' -> '.join(op.label('transform') for op in self.transforms) or 'id'
        defaults = {k: p.default for k, p in INPUT_PARAMS.get(self.input, {}).items()}
        shown = [f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in self.params
                 if _canonical_value(defaults[k]) != _canonical_value(v)]
        name = f'{self.input}({", ".join(shown)})' if shown else self.input
        text = f'{name}: {cascade} | {self.distance.label("distance")} x{self.weight:g}'
        return text if self.enabled else f'{text} (disabled)'


DECAYS = ('none', 'linear')


@dataclass(frozen=True)
class TrainingStrategy:
    """How the student is trained besides the loss: the genes the published methods differ in.

    ``inherit_neck_head``: start the student's neck and heads from the teacher's (FGD, MGD, DetKDS) or from their
    own initialisation (PKD). ``warmup``: the distillation weight rises linearly from 0 over this FRACTION of the
    schedule (so a proxy's warm-up scales to full training). ``decay``: ``'linear'`` lowers the distillation
    weight linearly to 0 at the end of the schedule (Global-Knowledge's attenuation), ``'none'`` keeps it.
    """
    inherit_neck_head: bool = False
    warmup: float = 0.0
    decay: str = 'none'

    def __post_init__(self):
        if not isinstance(self.inherit_neck_head, bool):
            raise ConfigError(f'strategy.inherit_neck_head must be true or false, got {self.inherit_neck_head!r}')
        warmup = self.warmup
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0.0 <= warmup < 1.0:
            raise ConfigError(f'strategy.warmup must be a fraction of the schedule in [0, 1), got {warmup!r}')
        object.__setattr__(self, 'warmup', float(warmup))
        if self.decay not in DECAYS:
            raise ConfigError(f'strategy.decay must be one of {list(DECAYS)}, got {self.decay!r}')

    @classmethod
    def parse(cls, obj: Union['TrainingStrategy', Mapping]) -> 'TrainingStrategy':
        if isinstance(obj, TrainingStrategy):
            return obj
        if not isinstance(obj, Mapping):
            raise ConfigError(f'strategy: expected a dict, got {obj!r}')
        unknown = set(obj) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f'strategy: unknown key(s) {sorted(unknown)}; known: inherit_neck_head, warmup, decay')
        return cls(**dict(obj))

    def to_dict(self) -> Dict[str, Any]:
        return {'inherit_neck_head': self.inherit_neck_head, 'warmup': self.warmup, 'decay': self.decay}

    def distill_weight(self, progress: float) -> float:
        """Factor on every distillation loss at ``progress`` (fraction of the schedule done, in [0, 1])."""
        progress = min(max(float(progress), 0.0), 1.0)
        factor = min(1.0, progress / self.warmup) if self.warmup > 0 else 1.0
        if self.decay == 'linear':
            factor *= 1.0 - progress
        return factor

    @property
    def constant_weight(self) -> bool:
        return self.warmup == 0 and self.decay == 'none'

    def formula(self) -> str:
        parts = ['inherit' if self.inherit_neck_head else 'no inherit']
        if self.warmup:
            parts.append(f'warm-up {self.warmup:g}')
        if self.decay != 'none':
            parts.append(f'{self.decay} decay')
        return ', '.join(parts)


def _input_rank(name: str) -> int:
    return list(KNOWLEDGE_INPUTS).index(name)


@dataclass(frozen=True)
class Genome:
    """A searched distiller: at most one term per knowledge input, kept in the fixed input order, and optionally
    its training strategy (None: the strategy of whoever trains it, e.g. the search config's proxy section)."""
    terms: Tuple[Term, ...] = ()
    strategy: Optional[TrainingStrategy] = None

    def __post_init__(self):
        if self.strategy is not None:
            object.__setattr__(self, 'strategy', TrainingStrategy.parse(self.strategy))
        terms = tuple(t if isinstance(t, Term) else Term.from_dict(t) for t in self.terms)
        seen = [t.input for t in terms]
        duplicates = sorted({n for n in seen if seen.count(n) > 1})
        if duplicates:
            raise ConfigError(f'genome: more than one term for input(s) {duplicates}')
        object.__setattr__(self, 'terms', tuple(sorted(terms, key=lambda t: _input_rank(t.input))))

    # ------------------------------------------------------------------ access and edits
    def term(self, input: str) -> Optional[Term]:
        return next((t for t in self.terms if t.input == input), None)

    @property
    def active_terms(self) -> Tuple[Term, ...]:
        return tuple(t for t in self.terms if t.active)

    def with_term(self, term: Term) -> 'Genome':
        """A copy with ``term`` replacing (or adding) the term of its input."""
        return Genome(tuple(t for t in self.terms if t.input != term.input) + (term,), self.strategy)

    def without(self, input: str) -> 'Genome':
        return Genome(tuple(t for t in self.terms if t.input != input), self.strategy)

    def replace(self, **changes) -> 'Genome':
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ identity
    def canonical(self) -> 'Genome':
        return Genome(tuple(t.canonical() for t in self.active_terms), self.strategy)

    def canonical_json(self) -> str:
        return json.dumps(self.canonical().to_dict(), sort_keys=True, separators=(',', ':'))

    def key(self) -> str:
        """Stable hash (sha256 hex) of the canonical form: equal for genomes that compute the same loss."""
        return hashlib.sha256(self.canonical_json().encode('utf-8')).hexdigest()

    def equivalent(self, other: 'Genome') -> bool:
        return self.key() == other.key()

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> Dict[str, Any]:
        # no 'strategy' key without one: the keys of genomes without a strategy stay what they always were
        data: Dict[str, Any] = {'terms': [t.to_dict() for t in self.terms]}
        if self.strategy is not None:
            data['strategy'] = self.strategy.to_dict()
        return data

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping) -> 'Genome':
        if not isinstance(data, Mapping) or set(data) - {'terms', 'strategy'}:
            raise ConfigError(f'genome: expected {{"terms": [...], "strategy": {{...}} (optional)}}, got keys {sorted(data) if isinstance(data, Mapping) else type(data).__name__}')
        terms = data.get('terms', [])
        if isinstance(terms, Mapping):   # also accept {input: {...}} for hand-written configs
            terms = [{'input': k, **dict(v)} for k, v in terms.items()]
        strategy = data.get('strategy')
        return cls(tuple(Term.from_dict(t) for t in terms),
                   TrainingStrategy.parse(strategy) if strategy is not None else None)

    @classmethod
    def from_json(cls, text: str) -> 'Genome':
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ConfigError(f'genome: not valid JSON ({exc})') from None
        return cls.from_dict(data)

    @classmethod
    def parse(cls, obj: Union['Genome', str, Mapping]) -> 'Genome':
        """From a Genome, its JSON text or its dict (what a config's ``genome=`` may hold)."""
        if isinstance(obj, Genome):
            return obj
        if isinstance(obj, str):
            return cls.from_json(obj)
        return cls.from_dict(obj)

    @classmethod
    def of(cls, terms: Iterable[Term]) -> 'Genome':
        return cls(tuple(terms))

    def formula(self) -> str:
        active = [t.formula() for t in self.terms if t.active]
        text = '; '.join(active) if active else 'no distillation'
        return f'{text} [{self.strategy.formula()}]' if self.strategy is not None else text

    def __str__(self) -> str:
        return self.formula()
