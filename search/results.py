"""A study's results as export, dashboard and report read them: trials, ranked genomes, generation bests, baselines.

Everything here is derived from storage alone (read-only) and is deterministic: the same storage gives the same
objects in the same order, so files written from them are byte-identical.

Ranking: a genome (trials sharing the user attribute ``key``) scores the MEAN of its COMPLETE evaluations
(re-evaluations use other seeds); trials marked ``interrupted`` and trials without ``key`` (baseline reference
runs) are never candidates. Ties go to the genome first evaluated earlier (lower trial number).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from optuna.trial import FrozenTrial, TrialState

from distill_core.errors import ConfigError

from . import study as st
from .storage import (ATTR_FAIL_REASON, ATTR_FORMULA, ATTR_GENERATION, ATTR_GENOME, ATTR_SEED, ATTR_STAGE,
                      mask_url, open_storage, resolve_storage_url)

STUDY_EXPORTED = 'exported_config'   # study attr: path of the last exported config
ATTR_BASELINE = 'baseline'        # name of a reference run ('none', 'fgd', ...); such trials have no `key`
BASELINE_LABELS = {'none': 'no distillation', 'fgd': 'FGD', 'mgd': 'MGD', 'pkd': 'PKD', 'crosskd': 'CrossKD',
                   'bckd': 'BCKD'}


@dataclass(frozen=True)
class TrialView:
    """One trial as the result views show it."""
    number: int
    state: str                        # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: Optional[float]
    stage: Optional[int]
    input: str
    generation: Optional[int]
    kind: str
    key: Optional[str]
    seed: Optional[int]
    formula: str
    genome: Optional[str]             # JSON text
    interrupted: bool
    baseline: Optional[str]
    reason: str
    metrics: Dict[str, float]
    curve: List[Dict[str, float]]
    intermediate: Dict[int, float]

    @classmethod
    def of(cls, trial: FrozenTrial) -> 'TrialView':
        attrs = trial.user_attrs
        try:
            curve = json.loads(attrs.get(st.ATTR_CURVE) or '[]')
        except (TypeError, ValueError):
            curve = []
        stage, generation, seed = attrs.get(ATTR_STAGE), attrs.get(ATTR_GENERATION), attrs.get(ATTR_SEED)
        return cls(number=trial.number, state=trial.state.name, value=trial.value,
                   stage=None if stage is None else int(stage), input=str(attrs.get(st.ATTR_INPUT, '')),
                   generation=None if generation is None else int(generation),
                   kind=str(attrs.get(st.ATTR_KIND, '')), key=attrs.get(st.ATTR_KEY),
                   seed=None if seed is None else int(seed), formula=str(attrs.get(ATTR_FORMULA, '')),
                   genome=attrs.get(ATTR_GENOME), interrupted=bool(attrs.get(st.ATTR_INTERRUPTED, False)),
                   baseline=attrs.get(ATTR_BASELINE), reason=str(attrs.get(ATTR_FAIL_REASON, '')),
                   metrics={k: float(v) for k, v in sorted((attrs.get(st.ATTR_METRICS) or {}).items())},
                   curve=list(curve), intermediate=dict(sorted(trial.intermediate_values.items())))

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE.name and self.value is not None

    @property
    def candidate(self) -> bool:
        """A search trial whose result counts (not a baseline, not an interrupted run)."""
        return self.key is not None and not self.interrupted and self.baseline is None


@dataclass(frozen=True)
class RankedGenome:
    """A searched genome with the mean of its COMPLETE evaluations."""
    rank: int
    key: str
    value: float
    trials: Tuple[int, ...]           # numbers of its COMPLETE trials
    formula: str
    genome: Dict[str, Any]
    stage: Optional[int]
    input: str


@dataclass(frozen=True)
class GenerationBest:
    stage: int
    input: str
    generation: int
    value: float                      # best COMPLETE value of the generation's exploration trials
    trial: int


@dataclass
class StudyResults:
    study: str
    storage: str                      # masked URL
    user_attrs: Dict[str, Any]
    trials: List[TrialView] = field(default_factory=list)

    # ------------------------------------------------------------------ ranking
    def ranked(self) -> List[RankedGenome]:
        groups: Dict[str, List[TrialView]] = {}
        for trial in self.trials:
            if trial.candidate and trial.complete:
                groups.setdefault(trial.key, []).append(trial)
        rows = []
        for key, trials in groups.items():
            first = min(trials, key=lambda t: t.number)
            mean = sum(t.value for t in trials) / len(trials)
            genome = json.loads(first.genome) if first.genome else {}
            rows.append((mean, first.number, key, trials, first, genome))
        # The search's own decision comes first: once finished, the evolution's winner (best mean over the
        # seeds of its re-evaluated finalists, stage 2 deciding) outranks a genome that looked better on a
        # single lucky seed; the rest follow by mean.
        winner = self.decided_winner()
        rows.sort(key=lambda r: (r[2] != winner, -r[0], r[1]))
        return [RankedGenome(rank=i + 1, key=key, value=mean, trials=tuple(sorted(t.number for t in trials)),
                             formula=first.formula, genome=genome, stage=first.stage, input=first.input)
                for i, (mean, _, key, trials, first, genome) in enumerate(rows)]

    def decided_winner(self) -> Optional[str]:
        """Key of the result the finished search decided on (its progress record), if any."""
        progress = json.loads(self.user_attrs.get(st.STUDY_PROGRESS) or '{}')
        best = progress.get('best') if progress.get('finished') else None
        return best.get('key') if best else None

    def at_rank(self, rank: int) -> RankedGenome:
        ranked = self.ranked()
        if rank < 1:
            raise ConfigError(f'--rank must be >= 1, got {rank}')
        if not ranked:
            raise ConfigError(f'study {self.study!r} ({self.storage}) has no COMPLETE search trial to export yet')
        if rank > len(ranked):
            raise ConfigError(f'--rank {rank}: study {self.study!r} has only {len(ranked)} evaluated genomes')
        return ranked[rank - 1]

    # ------------------------------------------------------------------ per-generation and per-stage views
    def generation_bests(self) -> List[GenerationBest]:
        """Best exploration value per (stage, input stream, generation), in that order."""
        best: Dict[Tuple[int, str, int], TrialView] = {}
        for trial in self.trials:
            if not (trial.candidate and trial.complete) or trial.kind == 'reeval' or trial.generation is None:
                continue
            slot = (trial.stage or 1, trial.input, trial.generation)
            if slot not in best or trial.value > best[slot].value:
                best[slot] = trial
        return [GenerationBest(stage=s, input=i, generation=g, value=t.value, trial=t.number)
                for (s, i, g), t in sorted(best.items())]

    def stage_bests(self) -> Dict[int, RankedGenome]:
        """The best-ranked genome first evaluated in each stage."""
        out: Dict[int, RankedGenome] = {}
        for genome in self.ranked():
            stage = genome.stage or 1
            out.setdefault(stage, genome)
        return dict(sorted(out.items()))

    def generation_series(self) -> Dict[str, List[Tuple[int, float]]]:
        """Best exploration AP per generation, one series per stream, labelled ``stage S · INPUT``."""
        series: Dict[str, List[Tuple[int, float]]] = {}
        for row in self.generation_bests():
            series.setdefault(f'stage {row.stage} · {row.input}', []).append((row.generation, row.value))
        return series

    def loss_terms(self, trial: 'TrialView') -> List[str]:
        """The loss columns of a trial's curve (detection and distillation terms), sorted."""
        return sorted({k for row in trial.curve for k in row if k.startswith('loss')})

    def trial(self, number: int) -> 'TrialView':
        return next(t for t in self.trials if t.number == number)

    def stages(self) -> List[int]:
        return sorted({t.stage or 1 for t in self.trials if t.candidate})

    def baselines(self) -> Dict[str, float]:
        """Mean proxy AP of each baseline reference run (COMPLETE ones), by name, sorted."""
        groups: Dict[str, List[float]] = {}
        for trial in self.trials:
            if trial.baseline is not None and trial.complete:
                groups.setdefault(str(trial.baseline), []).append(trial.value)
        return {name: sum(v) / len(v) for name, v in sorted(groups.items())}

    def search_trials(self) -> List[TrialView]:
        return [t for t in self.trials if t.baseline is None]


def baseline_label(name: str) -> str:
    return BASELINE_LABELS.get(name, name)


def open_results_study(study_name: str, storage: Optional[str] = None, run_dir: Optional[str] = None):
    """(optuna study, masked storage URL) of an existing study; ConfigError when there is none."""
    run_dir = run_dir or f'runs/{study_name}'
    url = resolve_storage_url(storage, run_dir)
    backend = open_storage(storage, run_dir)
    if not st.study_exists(backend, study_name):
        raise ConfigError(f'no study {study_name!r} in {mask_url(url)}')
    return st.open_study(backend, study_name, create=False), mask_url(url)


def read_results(study_name: str, storage: Optional[str] = None, run_dir: Optional[str] = None) -> StudyResults:
    study, shown = open_results_study(study_name, storage, run_dir)
    return results_of(study, shown)


def results_of(study, storage_shown: str) -> StudyResults:
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return StudyResults(study=study.study_name, storage=storage_shown, user_attrs=dict(study.user_attrs),
                        trials=[TrialView.of(t) for t in trials])
