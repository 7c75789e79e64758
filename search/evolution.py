"""The DetKDS divide-and-conquer evolution as an ask-and-tell controller (pure Python: no torch, no Ray).

Stage 1 evolves, for each knowledge input of the plan, the formulation of that input alone (cascade, distance,
op parameters, a weight from a small set); the inputs run as interleaved streams so that workers stay busy.
When an input's generations are spent, its top-K finalists are re-evaluated with other training seeds and the
best mean over seeds is the input's winner. Stage 2 fixes the winners' formulations and evolves their combined
weights (a term may be switched off), again ending with a top-K re-evaluation; its best mean is the result.

Algorithm: generational tournament selection with elitism. Generation 0 is every published genome the space offers
(``ops.seeds()``: the published methods and the DetKDS release's, even beyond the population size) plus random
genomes up to the population size; every later generation is ``population_size - elite_count`` new offspring (tournament-selected
parents, crossover with ``crossover_prob``, mutation with ``mutation_prob`` and always when the child would be a
duplicate); the next population is the elites of the previous one plus those offspring. It is chosen over
regularised (aging) evolution because each generation is a pure function of the previous generations' results
and a per-generation random stream: the order in which asynchronous workers finish never changes what is proposed,
so a controller rebuilt from storage proposes exactly what the dead one would have, and elitism guarantees that
the best formulation of a generation is never lost. The generational barrier costs little because stage-1 inputs
are interleaved (one input's generation fills the workers while another waits for its stragglers), and the
re-evaluations of genomes already certain to be finalists start during the last generation (the same trials a
closed generation would ask for, only earlier).

Invariants:
- a canonical key is explored at most once per study (``explore`` proposals, deduplicated by ``ops.key``);
  re-evaluations reuse a key with another seed, so ``(key, seed)`` identifies a trial and ``Proposal.id``; a
  stage-2 combination whose key a stage-1 trial already evaluated (one active term) joins the population with
  that result instead of running again;
- early stopping never leaves a stage, a generation or a finalist without complete evaluations: generation 0's
  seeds, the first proposal of every batch and the re-evaluations are ``protected`` (the searcher exempts them
  from the scheduler), so each generation completes at least one new genome unless it fails, and its elites
  (fit by construction) carry the earlier ones;
- FAIL and PRUNED results are told like any other and count as unfit (never selected over a fit genome, never
  a winner, never re-proposed); a finalist whose re-evaluation fails is unfit too (it is not robust to the seed);
- a genome's value is the mean over its evaluations (seeds); winners and the result are decided by that mean;
- the state is rebuilt from the record of finished trials: ``Evolution(..., history=records)`` replays them
  (a proposal whose ``(key, seed)`` has a finished record is told from the record instead of being handed out);
  trials that were in flight when the controller died have no finished record and are handed out again.

The genome type is opaque here: everything about it goes through a :class:`SearchSpaceOps` adapter (the concrete
adapters over ``distill_core.genome`` / ``search.space`` are in ``search/operators.py``).
"""
from __future__ import annotations

import difflib
import math
import random
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Dict, Generic, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, TypeVar

from distill_core.errors import ConfigError

G = TypeVar('G')

COMPLETE, FAIL, PRUNED = 'COMPLETE', 'FAIL', 'PRUNED'
FINISHED_STATES = (COMPLETE, FAIL, PRUNED)
EXPLORE, REEVAL = 'explore', 'reeval'
STAGE2_INPUT = 'combined'  # the input name of stage-2 proposals


class SearchSpaceOps(Protocol[G]):
    """What the controller needs from a search space, for one stage-1 input or for stage 2.

    Every method must be deterministic given ``rng`` (no set iteration, no global random state), or replay
    after a restart would propose different genomes.
    """

    def sample(self, rng: random.Random) -> G:
        """A random genome valid in the space."""

    def mutate(self, genome: G, rng: random.Random) -> G:
        """One or a few local changes; the result is valid in the space."""

    def crossover(self, a: G, b: G, rng: random.Random) -> G:
        """A child mixing the genes of ``a`` and ``b``; valid in the space."""

    def key(self, genome: G) -> str:
        """Stable hash of the canonical form: equal keys mean the same loss."""

    def seeds(self) -> Sequence[G]:
        """Published formulations that generation 0 starts from (valid in the space)."""


# --------------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class StagePlan:
    """Budgets and operator rates of the two stages, read from the search config's ``search`` section.

    Cost per stage-1 input: ``population_size + (generations - 1) * (population_size - elite_count)``
    explorations plus ``reeval_top_k * reeval_seeds`` re-evaluations; stage 2 likewise with its own population
    and generations (see :meth:`max_evaluations`).
    """
    stage1_inputs: Tuple[str, ...] = ()  # knowledge inputs evolved in stage 1; () = every input the space offers
    population_size: int = 16            # stage-1 population per input
    generations: int = 6                 # stage-1 generations per input (generation 0 included)
    stage2_population_size: int = 12
    stage2_generations: int = 4          # 0 = no stage 2: the best stage-1 winner is the result
    mutation_prob: float = 0.8           # chance to mutate a child (always mutated when it would be a duplicate)
    crossover_prob: float = 0.5          # chance that a child is a crossover of two tournament winners
    tournament_size: int = 3
    elite_count: int = 2                 # best of a population carried unchanged into the next one
    reeval_top_k: int = 3                # finalists per input (and in stage 2) re-evaluated with other seeds
    reeval_seeds: int = 2                # extra training seeds per finalist: train_seed + 1 .. train_seed + n
                                         # (2: a mean and a std over 3 seeds decide, not one lucky seed)
    seed: int = 0                        # controller random seed
    train_seed: int = 0                  # training seed of exploration trials
    max_retries: int = 50                # attempts to find a new (unseen) genome for one slot
    direction: str = 'maximize'          # the proxy metric (AP) is maximised

    def __post_init__(self):
        self._check()

    @classmethod
    def from_config(cls, section: Optional[Mapping[str, Any]], source: str = 'search config',
                    other_keys: Iterable[str] = ()) -> 'StagePlan':
        """Build from the ``search`` section of a search config.

        ``other_keys`` are keys of the same section read by other components (storage, workers); any other
        unknown key is a ConfigError (a typo must not silently fall back to a default).
        """
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        allowed = known | set(other_keys)
        for key in section:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f' (did you mean {close[0]!r}?)' if close else ''
                raise ConfigError(f'{source}: unknown key search.{key}{hint}')
        kwargs = {k: v for k, v in section.items() if k in known}
        if 'stage1_inputs' in kwargs:
            inputs = kwargs['stage1_inputs']
            if isinstance(inputs, str) or not isinstance(inputs, (list, tuple)):
                raise ConfigError(f'{source}: search.stage1_inputs must be a list of knowledge input names, '
                                  f'got {inputs!r}')
            kwargs['stage1_inputs'] = tuple(inputs)
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(f'{source}: {err}') from None

    def _check(self) -> None:
        def integer(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f'search.{name} must be an integer >= {low}, got {value!r}')

        def probability(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f'search.{name} must be a number in [0, 1], got {value!r}')

        for name in ('population_size', 'stage2_population_size'):
            integer(name, 2)
        integer('generations', 1)
        for name in ('stage2_generations', 'elite_count', 'reeval_top_k', 'reeval_seeds', 'seed', 'train_seed'):
            integer(name, 0)
        integer('tournament_size', 1)
        integer('max_retries', 1)
        probability('mutation_prob')
        probability('crossover_prob')
        if not all(isinstance(name, str) and name for name in self.stage1_inputs):
            raise ConfigError(f'search.stage1_inputs must be knowledge input names, got {self.stage1_inputs!r}')
        if len(set(self.stage1_inputs)) != len(self.stage1_inputs):
            raise ConfigError(f'search.stage1_inputs lists an input twice: {list(self.stage1_inputs)}')
        smallest = min(self.population_size, self.stage2_population_size)
        if self.elite_count >= smallest:
            raise ConfigError(f'search.elite_count ({self.elite_count}) must be smaller than the population sizes '
                              f'(search.population_size, search.stage2_population_size; smallest {smallest}): '
                              'every generation needs new offspring')
        if self.tournament_size > smallest:
            raise ConfigError(f'search.tournament_size ({self.tournament_size}) exceeds the smallest population '
                              f'size ({smallest})')
        if self.direction not in ('maximize', 'minimize'):
            raise ConfigError(f"search.direction must be 'maximize' or 'minimize', got {self.direction!r}")

    def stage_budget(self, stage: int) -> Tuple[int, int]:
        """(population size, generations) of a stage."""
        if stage == 1:
            return self.population_size, self.generations
        return self.stage2_population_size, self.stage2_generations

    def max_evaluations(self, num_inputs: Optional[int] = None) -> int:
        """Upper bound on trials (explorations + re-evaluations) of the whole search."""
        num_inputs = len(self.stage1_inputs) if num_inputs is None else num_inputs

        def per_stream(population, generations):
            if generations == 0:
                return 0
            explore = population + (generations - 1) * (population - self.elite_count)
            return explore + min(self.reeval_top_k, explore) * self.reeval_seeds

        return num_inputs * per_stream(self.population_size, self.generations) + \
            per_stream(self.stage2_population_size, self.stage2_generations)


# ------------------------------------------------------------------------------ proposals and results

@dataclass(frozen=True)
class Proposal(Generic[G]):
    """One trial to run: train the proxy with ``genome`` under ``seed`` and tell the result."""
    genome: G
    key: str
    stage: int
    input: str                  # stage-1 knowledge input, or 'combined' in stage 2
    generation: int             # re-evaluations carry the stream's final generation count
    kind: str                   # 'explore' | 'reeval'
    seed: int                   # training seed
    parents: Tuple[str, ...] = ()
    protected: bool = False     # must run to the end: early stopping may not prune it (see _Stream)

    @property
    def id(self) -> str:
        """Unique in a study and stable across restarts."""
        return trial_id(self.key, self.seed)


def trial_id(key: str, seed: int) -> str:
    return f'{key}@{seed}'


@dataclass(frozen=True)
class Result:
    """A trial's outcome. ``value`` is the proxy metric of a COMPLETE trial (optional otherwise)."""
    state: str
    value: Optional[float] = None
    reason: str = ''

    def __post_init__(self):
        state = str(self.state).upper()
        if state not in FINISHED_STATES:
            raise ValueError(f'result state must be one of {FINISHED_STATES}, got {self.state!r}')
        object.__setattr__(self, 'state', state)
        if state == COMPLETE and (self.value is None or not math.isfinite(float(self.value))):
            # A non-finite metric is a degenerate trial, not a score: record it as a failure with the reason.
            object.__setattr__(self, 'state', FAIL)
            object.__setattr__(self, 'reason', self.reason or f'non-finite value {self.value!r}')

    @classmethod
    def complete(cls, value: float) -> 'Result':
        return cls(COMPLETE, float(value))

    @classmethod
    def fail(cls, reason: str = '') -> 'Result':
        return cls(FAIL, None, reason)

    @classmethod
    def pruned(cls, value: Optional[float] = None, reason: str = '') -> 'Result':
        return cls(PRUNED, value, reason)

    @property
    def fit(self) -> bool:
        return self.state == COMPLETE


@dataclass(frozen=True)
class Record:
    """A finished trial as storage keeps it; the controller's state is rebuilt from a list of these.

    ``interrupted`` marks a trial that storage closed because its controller/worker died (Optuna marks such
    stale trials FAIL): it is not a result, and replay ignores it so that the trial is proposed again.
    ``genome`` is the genome's JSON in storage (the controller's own :meth:`Evolution.records` carry the genome
    object); replay matches on ``(key, seed)`` only.
    """
    key: str
    seed: int
    state: str
    value: Optional[float] = None
    stage: int = 1
    input: str = ''
    generation: int = 0
    kind: str = EXPLORE
    genome: Any = None
    reason: str = ''
    interrupted: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'Record':
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def finished(self) -> bool:
        return not self.interrupted and str(self.state).upper() in FINISHED_STATES

    @property
    def result(self) -> Result:
        return Result(self.state, self.value, self.reason)


@dataclass(frozen=True)
class Best(Generic[G]):
    """A genome with the mean of its evaluations (all COMPLETE) and their sample std (None for one)."""
    key: str
    genome: G
    value: float
    evaluations: int
    stage: int
    input: str
    std: Optional[float] = None


# ------------------------------------------------------------------------------------------ ledger

class _Ledger:
    """Every genome and result of the study, shared by the streams."""

    def __init__(self, maximize: bool):
        self.sign = 1.0 if maximize else -1.0
        self.genomes: Dict[str, Any] = {}
        self.origin: Dict[str, Tuple[int, str]] = {}         # key -> (stage, input)
        self.results: Dict[str, Dict[int, Result]] = {}      # key -> seed -> result

    def fitness(self, key: str, seed: int) -> float:
        """Signed so that larger is better; unfit (FAIL, PRUNED, not yet told) is -inf."""
        result = self.results.get(key, {}).get(seed)
        return self.sign * result.value if result is not None and result.fit else -math.inf

    def mean(self, key: str) -> Optional[float]:
        """Mean value over all evaluations of ``key``; None when any of them is unfit or none exists."""
        results = list(self.results.get(key, {}).values())
        if not results or not all(r.fit for r in results):
            return None
        return sum(r.value for r in results) / len(results)

    def std(self, key: str) -> Optional[float]:
        """Sample std over the evaluations of ``key`` (None below two, or when one is unfit)."""
        results = list(self.results.get(key, {}).values())
        mean = self.mean(key)
        if mean is None or len(results) < 2:
            return None
        return math.sqrt(sum((r.value - mean) ** 2 for r in results) / (len(results) - 1))

    def best(self, keys: Iterable[str], genomes: Optional[Mapping[str, Any]] = None,
             where: Optional[Tuple[int, str]] = None) -> Optional[Best]:
        """Best mean among ``keys`` (ties: the earliest in ``keys`` wins). ``genomes``/``where``: the genome form
        and (stage, input) to report, when a stream holds its own form of a key evaluated elsewhere."""
        best, best_score = None, -math.inf
        for key in keys:
            mean = self.mean(key)
            if mean is not None and self.sign * mean > best_score:
                best, best_score = key, self.sign * mean
        if best is None:
            return None
        stage, name = where or self.origin[best]
        genome = (genomes or self.genomes)[best]
        return Best(best, genome, self.mean(best), len(self.results[best]), stage, name, self.std(best))


# ------------------------------------------------------------------------------------------ streams

class _Stream:
    """One evolving population: a stage-1 knowledge input, or the stage-2 weight combination.

    Phases: 'explore' (generations) -> 'reeval' (finalists with other seeds) -> 'done'. A batch (one generation or
    the re-evaluations) is built at once from the previous results and a random stream seeded by
    (controller seed, stage, input, generation), then handed out; the next batch is built when all are told.
    """

    def __init__(self, stage: int, name: str, ops: SearchSpaceOps, plan: StagePlan, ledger: _Ledger,
                 seen: Iterable[str]):
        self.stage, self.name, self.ops, self.plan, self.ledger = stage, name, ops, plan, ledger
        self.population_size, self.generations = plan.stage_budget(stage)
        self.seen = set(seen)            # keys this stream must not explore again (its own)
        self.explored: List[str] = []    # keys explored by this stream, in proposal order
        self.genomes: Dict[str, Any] = {}  # this stream's genome per key (stage 2 keeps its own multi-term form)
        self.population: List[str] = []  # selection pool: elites of the previous population + last offspring
        self.finalists: List[str] = []
        self.generation = 0              # generation of the current batch
        self.phase = 'explore'
        self.unissued: List[Proposal] = []
        self.batch_keys: List[str] = []
        self.untold: set = set()         # ids of the current batch not told yet
        self.exhausted = False
        self.early: set = set()          # ids of re-evaluations handed out before the last generation closed
        self.extra = 0                   # seeds of generation 0 beyond the population size

    # ----------------------------------------------------------------------- batch construction
    def _rng(self, tag: str) -> random.Random:
        # A string seed is hashed with SHA-512 by random.Random: stable across processes and hash seeds.
        return random.Random(f'detkds/{self.plan.seed}/stage{self.stage}/{self.name}/{tag}')

    def start(self) -> None:
        if self.generations == 0:
            self.phase = 'done'
            return
        self._set_batch(self._generation_zero())

    def _new(self, genome, parents: Tuple[str, ...], protected: bool = False) -> Optional[Proposal]:
        key = self.ops.key(genome)
        if key in self.seen:
            return None
        self.seen.add(key)
        self.explored.append(key)
        self.genomes[key] = genome
        self.ledger.genomes.setdefault(key, genome)
        self.ledger.origin.setdefault(key, (self.stage, self.name))
        return Proposal(genome, key, self.stage, self.name, self.generation, EXPLORE, self.plan.train_seed,
                        parents, protected)

    @staticmethod
    def _protect_first(batch: List[Proposal]) -> List[Proposal]:
        """Early stopping must not leave a generation without a complete evaluation of its own: the first proposal
        of every batch runs to the end (generation 0's are the protected seeds, unless the space has none; later,
        the first offspring, a child of a tournament winner)."""
        if batch and not batch[0].protected:
            batch[0] = replace(batch[0], protected=True)
        return batch

    def _generation_zero(self) -> List[Proposal]:
        """Every seed (published genome), protected from early stopping, even beyond the population size; then
        random genomes up to it."""
        batch = []
        for genome in self.ops.seeds():
            proposal = self._new(genome, (), protected=True)
            if proposal is not None:
                batch.append(proposal)
        self.extra = max(0, len(batch) - self.population_size)
        rng = self._rng('g0')
        misses = 0
        while len(batch) < self.population_size and misses < self.plan.max_retries * self.population_size:
            proposal = self._new(self.ops.sample(rng), ())
            if proposal is None:
                misses += 1
            else:
                batch.append(proposal)
        return self._protect_first(batch)

    def _tournament(self, rng: random.Random) -> str:
        pool = self.population
        contestants = rng.sample(range(len(pool)), min(self.plan.tournament_size, len(pool)))
        # Best fitness wins; ties go to the earlier member so that the choice is deterministic.
        winner = max(contestants, key=lambda i: (self.ledger.fitness(pool[i], self.plan.train_seed), -i))
        return pool[winner]

    def _offspring(self) -> List[Proposal]:
        rng = self._rng(f'g{self.generation}')
        genomes = self.genomes
        batch = []
        for _ in range(self.population_size - self.plan.elite_count):
            child = None
            for _attempt in range(self.plan.max_retries):
                first = self._tournament(rng)
                parents = (first,)
                genome = genomes[first]
                if len(self.population) > 1 and rng.random() < self.plan.crossover_prob:
                    second = self._tournament(rng)
                    if second == first:  # one more draw for a distinct mate; self-crossover is a plain copy
                        second = self._tournament(rng)
                    if second != first:
                        parents = (first, second)
                        genome = self.ops.crossover(genome, genomes[second], rng)
                if rng.random() < self.plan.mutation_prob or self.ops.key(genome) in self.seen:
                    genome = self.ops.mutate(genome, rng)
                if self.ops.key(genome) in self.seen:  # still a duplicate: a second mutation, then new parents
                    genome = self.ops.mutate(genome, rng)
                child = self._new(genome, parents)
                if child is not None:
                    break
            if child is None:
                # max_retries variations of the population found nothing new: the neighbourhood is exhausted.
                self.exhausted = True
                break
            batch.append(child)
        return self._protect_first(batch)

    def _ranked_fit(self) -> List[str]:
        """Explored keys with a fit first result, best first (ties: the earlier explored)."""
        seed = self.plan.train_seed
        fit = [k for k in self.explored if self.ledger.fitness(k, seed) > -math.inf]
        order = sorted(range(len(fit)), key=lambda i: (-self.ledger.fitness(fit[i], seed), i))
        return [fit[i] for i in order]

    def _reevaluation_proposals(self, keys: Sequence[str], generation: int) -> List[Proposal]:
        seed = self.plan.train_seed
        return [Proposal(self.genomes[key], key, self.stage, self.name, generation, REEVAL, seed + offset, (key,),
                         protected=True)
                for key in keys for offset in range(1, self.plan.reeval_seeds + 1)]

    def _reevaluations(self) -> List[Proposal]:
        self.finalists = self._ranked_fit()[:self.plan.reeval_top_k] if self.plan.reeval_seeds else []
        return self._reevaluation_proposals(self.finalists, self.generation)

    def issue_certain_reevaluations(self) -> bool:
        """During the last generation, hand out the re-evaluations of genomes already certain to be finalists
        whatever the untold results turn out to be, so that a worker does not idle while the generation's
        stragglers finish. A told genome is certain when the genomes ranked above it plus every untold proposal
        of the batch are fewer than ``reeval_top_k``. Results never change once told, so these are exactly
        re-evaluations the closed generation would ask for: the set of trials, and replay, are unchanged; only
        their timing moves earlier. Returns whether any was added."""
        last_generation = self.phase == 'explore' and self.generation == self.generations - 1
        if not last_generation or not self.plan.reeval_seeds or not self.untold:
            return False
        certain = [key for rank, key in enumerate(self._ranked_fit())
                   if rank + len(self.untold) < self.plan.reeval_top_k]
        # the closed generation's re-evaluations carry the generation number after the last one
        new = [p for p in self._reevaluation_proposals(certain, self.generation + 1) if p.id not in self.early]
        self.early.update(p.id for p in new)
        self.unissued.extend(new)
        return bool(new)

    def _set_batch(self, batch: List[Proposal]) -> None:
        self.batch_keys = [p.key for p in batch]
        waiting = {p.id for p in self.unissued}   # early re-evaluations not handed out yet stay in the queue
        self.unissued = [p for p in batch if p.id not in self.early or p.id in waiting]
        # an early re-evaluation already told is not waited for; one still in flight is
        self.untold = {p.id for p in batch
                       if not (p.id in self.early and p.seed in self.ledger.results.get(p.key, {}))}

    # ----------------------------------------------------------------------------- advancing
    @property
    def batch_done(self) -> bool:
        return not self.untold and self.phase != 'done'

    def advance(self) -> None:
        """Called when every proposal of the current batch is told: build the next batch (or finish)."""
        while self.batch_done:
            if self.phase == 'explore':
                self._close_generation()
                if self.generation < self.generations and self.population and not self.exhausted:
                    self._set_batch(self._offspring())
                    if self.untold:
                        continue
                    self.exhausted = True
                self.phase = 'reeval'
                self._set_batch(self._reevaluations())
            else:
                self.phase = 'done'

    def _close_generation(self) -> None:
        offspring = self.batch_keys
        if self.generation == 0:
            self.population = list(offspring)
        else:
            seed = self.plan.train_seed
            ranked = sorted(range(len(self.population)),
                            key=lambda i: (-self.ledger.fitness(self.population[i], seed), i))
            elites = [self.population[i] for i in ranked[:self.plan.elite_count]
                      if self.ledger.fitness(self.population[i], seed) > -math.inf]
            self.population = elites + list(offspring)
        self.generation += 1

    def winner(self) -> Optional[Best]:
        """Best mean among the finalists (all re-evaluated), or best single value without re-evaluation."""
        where = (self.stage, self.name)
        if self.finalists:
            return self.ledger.best(self.finalists, self.genomes, where)
        seed = self.plan.train_seed
        order = sorted(range(len(self.explored)), key=lambda i: (-self.ledger.fitness(self.explored[i], seed), i))
        return self.ledger.best([self.explored[i] for i in order[:1]], self.genomes, where)


# -------------------------------------------------------------------------------------- controller

class Evolution(Generic[G]):
    """Ask-and-tell controller of the two-stage search; see the module docstring.

    ``stage1_ops`` maps each knowledge input to its adapter; ``stage2_ops(winners)`` builds the stage-2 adapter
    from the stage-1 winners (``{input: genome}``, in plan order). ``history``: finished records of earlier runs
    of the same study (dicts or :class:`Record`); matching trials are never re-run.
    """

    def __init__(self, plan: StagePlan, stage1_ops: Mapping[str, SearchSpaceOps],
                 stage2_ops: Optional[Callable[[Dict[str, Any]], SearchSpaceOps]] = None,
                 history: Iterable[Any] = ()):
        inputs = tuple(plan.stage1_inputs) or tuple(stage1_ops)
        if not inputs:
            raise ConfigError('search.stage1_inputs is empty and the search space offers no knowledge input')
        unknown = [name for name in inputs if name not in stage1_ops]
        if unknown:
            raise ConfigError(f'search.stage1_inputs names {unknown}, which the search space does not offer '
                              f'(available: {list(stage1_ops)})')
        self.plan, self.inputs = plan, inputs
        self._stage2_factory = stage2_ops
        self._ledger = _Ledger(plan.direction == 'maximize')
        self._history: Dict[Tuple[str, int], Record] = {}
        for record in history:
            record = record if isinstance(record, Record) else Record.from_dict(record)
            if record.finished:
                self._history[(record.key, int(record.seed))] = record
        self._in_flight: Dict[str, Tuple[_Stream, Proposal]] = {}
        self._told: List[Record] = []
        self._replayed = 0
        self._reused = 0
        self.stage = 1
        self._stage2_note = ''  # why stage 2 did not run, when it did not
        self.streams: List[_Stream] = []
        for name in inputs:
            stream = _Stream(1, name, stage1_ops[name], plan, self._ledger, ())
            stream.start()
            self.streams.append(stream)
        self._settle()

    @classmethod
    def replay(cls, history: Iterable[Any], plan: StagePlan, stage1_ops: Mapping[str, SearchSpaceOps],
               stage2_ops: Optional[Callable[[Dict[str, Any]], SearchSpaceOps]] = None) -> 'Evolution':
        """The controller state after a restart, rebuilt from storage's finished records."""
        return cls(plan, stage1_ops, stage2_ops, history=history)

    # ---------------------------------------------------------------------------- ask / tell
    def ask(self, n: int = 1, seed: Optional[int] = None) -> List[Proposal]:
        """Up to ``n`` new trials, taken round-robin from the streams with work ready (stage-1 inputs run
        interleaved). Empty when every ready proposal is in flight (wait for results) or when finished.

        ``seed``: only proposals with that training seed (a shared-teacher group trains candidates of one seed
        on the same batches); the others stay ready, in their order, for a later ask."""
        def ready(stream: _Stream) -> List[Proposal]:
            return [p for p in stream.unissued if seed is None or p.seed == seed]

        out: List[Proposal] = []
        active = [s for s in self.streams if ready(s)]
        while len(out) < n and active:
            for stream in active:
                if len(out) == n:
                    break
                proposal = ready(stream)[0]
                stream.unissued.remove(proposal)
                self._in_flight[proposal.id] = (stream, proposal)
                out.append(proposal)
            active = [s for s in active if ready(s)]
        return out

    def tell(self, ref: Any, result: Any) -> None:
        """Report the result of an in-flight proposal, named by the Proposal, its id, or its key (when only one
        in-flight proposal has that key). ``result``: a :class:`Result` or a number (= COMPLETE with that value)."""
        stream, proposal = self._in_flight.pop(self._resolve(ref))
        if not isinstance(result, Result):
            result = Result.complete(result)
        self._record(stream, proposal, result)
        self._settle()

    def _resolve(self, ref: Any) -> str:
        if isinstance(ref, Proposal):
            ref = ref.id
        if ref in self._in_flight:
            return ref
        matches = [pid for pid, (_, p) in self._in_flight.items() if p.key == ref]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValueError(f'key {ref!r} names several in-flight trials {matches}; tell by proposal id')
        raise ValueError(f'{ref!r} is not an in-flight proposal (already told, or never proposed)')

    def _record(self, stream: _Stream, proposal: Proposal, result: Result, replayed: bool = False) -> None:
        self._ledger.results.setdefault(proposal.key, {})[proposal.seed] = result
        stream.untold.discard(proposal.id)
        self._replayed += replayed
        self._told.append(Record(proposal.key, proposal.seed, result.state, result.value, proposal.stage,
                                 proposal.input, proposal.generation, proposal.kind, proposal.genome,
                                 result.reason))

    def _settle(self) -> None:
        """Tell ready proposals that already have a finished record, advance completed batches, start stage 2;
        repeat until nothing changes."""
        changed = True
        while changed:
            changed = False
            for stream in self.streams:
                for proposal in list(stream.unissued):
                    if proposal.seed in self._ledger.results.get(proposal.key, {}):
                        # Evaluated by an earlier stage (a stage-2 combination equal to a stage-1 genome): it
                        # joins the population with the known result; no second trial.
                        stream.unissued.remove(proposal)
                        stream.untold.discard(proposal.id)
                        self._reused += 1
                    elif (proposal.key, proposal.seed) in self._history:
                        stream.unissued.remove(proposal)
                        self._record(stream, proposal, self._history[(proposal.key, proposal.seed)].result, True)
                    else:
                        continue
                    changed = True
                if stream.issue_certain_reevaluations():
                    changed = True
                if stream.batch_done:
                    stream.advance()
                    changed = True
            if self.stage == 1 and all(s.phase == 'done' for s in self.streams):
                self._start_stage2()
                changed = True

    def _start_stage2(self) -> None:
        self.stage = 2
        winners = {name: best.genome for name, best in self.winners().items()}
        if self.plan.stage2_generations == 0 or self._stage2_factory is None:
            self._stage2_note = 'stage 2 not planned'
        elif not winners:
            self._stage2_note = 'no knowledge input has a fit stage-1 winner'
        else:
            # Stage 2 may meet stage-1 genomes again (a combination with one active term): they are not
            # excluded but reused with their results (see _settle), so the optimum stays reachable.
            stream = _Stream(2, STAGE2_INPUT, self._stage2_factory(winners), self.plan, self._ledger, ())
            stream.start()
            self.streams.append(stream)

    # ------------------------------------------------------------------------------- results
    @property
    def finished(self) -> bool:
        return self.stage == 2 and all(s.phase == 'done' for s in self.streams)

    def population(self, input: str) -> List[str]:
        """Keys of the current selection pool of a stream (a stage-1 input, or 'combined')."""
        for stream in self.streams:
            if stream.name == input:
                return list(stream.population)
        raise KeyError(f'no stream named {input!r}; streams: {[s.name for s in self.streams]}')

    def max_evaluations(self) -> int:
        """The plan's bound on trials plus the generation-0 seeds beyond the population sizes (known for stage 2
        once it has started)."""
        return self.plan.max_evaluations(len(self.inputs)) + sum(stream.extra for stream in self.streams)

    def in_flight(self) -> List[Proposal]:
        return [p for _, p in self._in_flight.values()]

    def records(self) -> List[Record]:
        """Every told trial (replayed ones included), in the order told; enough to rebuild this controller."""
        return list(self._told)

    def winners(self) -> Dict[str, Best]:
        """Stage-1 winner per knowledge input (inputs without a fit genome are absent)."""
        winners = {}
        for stream in self.streams:
            if stream.stage == 1:
                best = stream.winner()
                if best is not None:
                    winners[stream.name] = best
        return winners

    def best(self) -> Optional[Best]:
        """The search result once finished (stage-2 winner, else the best stage-1 winner); before that, the best
        mean over evaluations so far."""
        if not self.finished:
            return self._ledger.best(self._ledger.genomes)
        result = None
        for contender in self.contenders():   # in the order decided; a later one must have a higher mean
            if result is None or self._ledger.sign * contender.value > self._ledger.sign * result.value:
                result = contender
        if result is None:   # no input had a fit winner (all finalists failed): the best fit genome seen
            result = self._ledger.best(self._ledger.genomes)
        return result

    def contenders(self) -> List[Best]:
        """The candidates for the final answer, each decided by the mean over its seeds: every stage-1 input's
        winner (in input order), then the stage-2 winner. The first is the incumbent; a later one displaces it
        only with a strictly better mean (a tie keeps the incumbent)."""
        out = list(self.winners().values())
        winner2 = self.stage2_winner()
        if winner2 is not None and winner2.key not in {b.key for b in out}:
            out.append(winner2)
        return out

    def stage2_winner(self) -> Optional[Best]:
        """Best mean among stage 2's re-evaluated finalists (None before or without stage 2)."""
        stage2 = [s for s in self.streams if s.stage == 2]
        return stage2[0].winner() if stage2 else None

    def decision(self) -> Optional[Dict[str, Any]]:
        """How firm the final answer is: its mean and std, and the contenders whose mean lies within one std
        (the larger of the two) of it, i.e. for which the decision would flip within one std of seed noise."""
        best = self.best() if self.finished else None
        if best is None:
            return None
        close = []
        for other in self.contenders():
            if other.key == best.key:
                continue
            spread = max(s for s in (best.std, other.std, 0.0) if s is not None)
            if abs(best.value - other.value) <= spread:
                close.append(dict(key=other.key, value=other.value, std=other.std))
        return dict(key=best.key, value=best.value, std=best.std, evaluations=best.evaluations,
                    contenders=len(self.contenders()), within_one_std=close)

    def progress(self) -> Dict[str, Any]:
        """A JSON-ready summary for the status command."""
        counts = {state.lower(): 0 for state in FINISHED_STATES}
        for record in self._told:
            counts[record.state.lower()] += 1
        counts.update(told=len(self._told), in_flight=len(self._in_flight), replayed=self._replayed,
                      reused=self._reused,
                      unmatched_history=len(self._history) - self._replayed,
                      max_evaluations=self.max_evaluations())

        def summary(best: Optional[Best]):
            return None if best is None else dict(key=best.key, value=best.value, evaluations=best.evaluations,
                                                  stage=best.stage, input=best.input, std=best.std)

        streams = [dict(stage=s.stage, input=s.name, phase=s.phase, generation=s.generation,
                        generations=s.generations, explored=len(s.explored), exhausted=s.exhausted,
                        best=summary(s.winner())) for s in self.streams]
        return dict(stage=self.stage, finished=self.finished, streams=streams, counts=counts,
                    best=summary(self.best()), decision=self.decision(), note=self._stage2_note)
