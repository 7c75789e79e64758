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
from typing import Any, Dict, List, Mapping, Optional, Tuple

from optuna.trial import FrozenTrial, TrialState

from distill_core.errors import ConfigError

from . import study as st
from .storage import (ATTR_FAIL_REASON, ATTR_FORMULA, ATTR_GENERATION, ATTR_GENOME, ATTR_SEED, ATTR_STAGE,
                      mask_url, open_storage, resolve_storage_url)

STUDY_EXPORTED = 'exported_config'   # study attr: path of the last exported config
STUDY_ANSWER = 'answer'               # study attr: the search's final answer (JSON, see StudyResults.answer)
ATTR_BASELINE = 'baseline'        # name of a reference run ('none', 'fgd', ...); such trials have no `key`
ATTR_RUNG = 'rung'                # 'final': a final-rung run (search/final_rung.py); no `key`, no `baseline`
ATTR_FINALIST = 'finalist'        # a final-rung run's genome key or baseline name
ATTR_FINALIST_KIND = 'finalist_kind'   # 'genome' | 'baseline'
ATTR_STRATEGY = 'strategy'        # a baseline run's training strategy (its recipe's; search/baselines.py), JSON
STUDY_FINALISTS = 'final_rung_finalists'   # study attr: JSON list of the latest final rung's finalists
FINAL_RUNG = 'final'
BASELINE_LABELS = {'none': 'no distillation', 'fgd': 'FGD', 'mgd': 'MGD', 'pkd': 'PKD', 'crosskd': 'CrossKD',
                   'bckd': 'BCKD', 'gkd': 'GKD', 'gkd_global': 'Global-Knowledge'}


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
    rung: Optional[str]               # 'final' for a final-rung run
    finalist: Optional[str]           # its genome key or baseline name
    finalist_kind: Optional[str]
    strategy: Optional[str]           # a baseline run's recipe strategy (None: recorded before recipes were kept)
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
                   baseline=attrs.get(ATTR_BASELINE), rung=attrs.get(ATTR_RUNG), finalist=attrs.get(ATTR_FINALIST),
                   finalist_kind=attrs.get(ATTR_FINALIST_KIND), strategy=attrs.get(ATTR_STRATEGY),
                   reason=str(attrs.get(ATTR_FAIL_REASON, '')),
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

    def baseline_runs(self) -> Dict[str, Dict[int, float]]:
        """Proxy AP of every COMPLETE baseline run: name -> seed -> AP. A run that records its recipe's strategy
        supersedes one that does not (trained with the proxy's strategy, before recipes were honoured)."""
        runs: Dict[str, Dict[int, float]] = {}
        recorded: set = set()
        for trial in self.trials:
            if trial.baseline is not None and trial.complete and trial.seed is not None:
                name, seed = str(trial.baseline), int(trial.seed)
                if not _superseded(trial, (name, seed), recorded):
                    runs.setdefault(name, {})[seed] = trial.value
        return dict(sorted(runs.items()))

    def final_runs(self) -> Dict[str, Dict[str, Any]]:
        """The final rung (search/final_rung.py): finalist -> dict(kind, label, genome, runs=seed -> AP of its
        COMPLETE runs, failed=whether any run failed), in first-run order; empty without one."""
        out: Dict[str, Dict[str, Any]] = {}
        recorded: set = set()
        current = self.user_attrs.get(STUDY_FINALISTS)   # the latest rung's finalists (None: recorded before)
        current = None if current is None else set(json.loads(current))
        for trial in self.trials:
            if trial.rung != FINAL_RUNG or trial.finalist is None or trial.interrupted:
                continue
            if current is not None and trial.finalist not in current:   # e.g. a baseline whose recipe changed
                continue
            entry = out.setdefault(trial.finalist, dict(kind=trial.finalist_kind, label=trial.formula,
                                                        genome=trial.genome, runs={}, failed=False))
            if trial.complete and trial.seed is not None:
                if not _superseded(trial, (trial.finalist, int(trial.seed)), recorded):
                    entry['runs'][int(trial.seed)] = trial.value
            elif trial.state == TrialState.FAIL.name:
                entry['failed'] = True
        return out

    def standing(self, seeds: Optional[List[int]] = None) -> Optional[Dict[str, Any]]:
        """Where the search stands against the bar: the best baseline (mean over ``seeds``, default all its runs)
        and the best genome so far (its mean over its evaluations), with the gap. None without baselines."""
        bar = None
        for name, runs in self.baseline_runs().items():
            values = [v for seed, v in runs.items() if seeds is None or seed in seeds]
            if values and (bar is None or sum(values) / len(values) > bar['value']):
                bar = dict(name=name, value=sum(values) / len(values), std=_std(values), seeds=len(values))
        if bar is None:
            return None
        ranked = self.ranked()
        best = ranked[0] if ranked else None
        return dict(bar=bar, best=None if best is None else dict(value=best.value, evaluations=len(best.trials),
                                                                 formula=best.formula),
                    gap=None if best is None else best.value - bar['value'])

    def answer(self) -> Optional[Dict[str, Any]]:
        """The finished search's answer, as the controller decided and stored it (None before)."""
        raw = self.user_attrs.get(STUDY_ANSWER)
        return json.loads(raw) if raw else None

    def search_trials(self) -> List[TrialView]:
        return [t for t in self.trials if t.baseline is None and t.rung is None]


def _std(values: List[float]) -> Optional[float]:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def decide_answer(results: 'StudyResults', seeds: List[int], published_name=None,
                  variant_of=None) -> Optional[Dict[str, Any]]:
    """The search's answer: its decided genome unless a baseline has a higher mean over the same seeds; where the
    study has a final rung (search/final_rung.py), the finalist with the best mean there.

    The baselines ran first, so they are the incumbents: a searched genome must have a strictly higher mean to
    be the answer. ``published_name(genome dict) -> name or None`` says whether a genome is a published method;
    ``variant_of(genome dict) -> name or None`` whether a new one is a published method's terms re-weighted.
    """
    final = _final_rung_answer(results, seeds)
    if final is not None:
        winner, bar = final
    else:
        winner, bar = _proxy_answer(results, seeds)
    if winner is None and bar is None:
        return None
    if winner is None or (bar is not None and bar['value'] >= winner['value']):
        answer = dict(kind='baseline', name=bar['name'], label=bar['label'], published=True,
                      published_name=bar['name'], value=bar['value'], std=bar['std'], seeds=len(seeds))
    else:
        name = published_name(winner['genome']) if published_name else None
        answer = dict(kind='genome', key=winner['key'], label=winner['label'], published=name is not None,
                      published_name=name, value=winner['value'], std=winner['std'], seeds=winner['seeds'])
        if name is None and variant_of is not None:
            answer['variant_of'] = variant_of(winner['genome'])
    answer['bar'] = bar
    answer['margin'] = None if bar is None else answer['value'] - bar['value']
    if final is not None:
        answer['decided_by'] = FINAL_RUNG
    return answer


def _mean_entry(values: List[float], **fields) -> Dict[str, Any]:
    return dict(fields, value=sum(values) / len(values), std=_std(values), seeds=len(values))


def _proxy_answer(results: 'StudyResults', seeds: List[int]):
    """(the evolution's decided genome, the best baseline over ``seeds``) under the search's proxy."""
    ranked = results.ranked()
    top = ranked[0] if ranked and ranked[0].key == results.decided_winner() else None
    winner = None if top is None else _mean_entry([results.trial(n).value for n in top.trials], key=top.key,
                                                  label=top.formula, genome=top.genome)
    values = {name: [runs[seed] for seed in seeds] for name, runs in results.baseline_runs().items()
              if all(seed in runs for seed in seeds)}
    bar_name = max(values, key=lambda n: (sum(values[n]) / len(values[n]), n), default=None)
    bar = None if bar_name is None else _mean_entry(values[bar_name], name=bar_name, label=baseline_label(bar_name))
    return winner, bar


def _final_rung_answer(results: 'StudyResults', seeds: List[int]):
    """(best genome, best baseline) by their final-rung means over ``seeds``; None when the study has no final
    rung with a genome complete on every seed (then the proxy decides). A finalist with a failed run is out."""
    genomes, baselines = [], []
    for name, entry in results.final_runs().items():
        runs = entry['runs']
        if entry['failed'] or not all(seed in runs for seed in seeds):
            continue
        values = [runs[seed] for seed in seeds]
        if entry['kind'] == 'genome':
            genomes.append(_mean_entry(values, key=name, label=entry['label'], genome=json.loads(entry['genome'])))
        else:
            baselines.append(_mean_entry(values, name=name, label=baseline_label(name)))
    if not genomes:
        return None
    winner = max(genomes, key=lambda g: g['value'])   # max keeps the first (the decided winner) on a tie
    bar = max(baselines, key=lambda b: (b['value'], b['name']), default=None)
    return winner, bar


def _superseded(trial: TrialView, run: Tuple[str, int], recorded: set) -> bool:
    """Whether a baseline's run (``run`` = (name, seed)) is superseded: it records no strategy (it trained the
    proxy's, before recipes were honoured; genome runs never record one) and a run of the same (name, seed) that
    records its recipe came before. ``recorded`` collects those, in trial order: a later one overwrites."""
    if trial.strategy is not None:
        recorded.add(run)
        return False
    return run in recorded


def describe_answer(answer: Mapping[str, Any]) -> str:
    """One plain sentence: what the answer is, published or new, and by how much it beats the best baseline."""
    spread = f' +- {answer["std"]:.4f}' if answer.get('std') is not None else ''
    what = (f'the published baseline {answer["label"]}' if answer['kind'] == 'baseline' else
            f'the published method {answer["published_name"]} ({answer["label"]})' if answer['published'] else
            f'the published method {answer["variant_of"]} with other weights or training strategy: '
            f'{answer["label"]}' if answer.get('variant_of') else
            f'a new formulation: {answer["label"]}')
    where = 'final-rung AP' if answer.get('decided_by') == FINAL_RUNG else 'proxy AP'
    line = f'{what}, {where} {answer["value"]:.4f}{spread} over {answer["seeds"]} seed(s)'
    bar = answer.get('bar')
    if bar is None:
        return line + ' (no baseline measured)'
    if answer['kind'] == 'baseline':
        line += ': no searched distiller beat it'
    else:
        line += f', {answer["margin"]:+.4f} over the best baseline {bar["label"]} ({bar["value"]:.4f})'
    unlike = answer.get('inheritance_unlike')
    if unlike:
        line += ('; baselines whose recipe differs from it in inheriting the teacher\'s neck/head, which a short '
                 f'proxy favours: {", ".join(baseline_label(n) for n in unlike)} (compare after full training)')
    return line


def standing_lines(results: 'StudyResults') -> List[str]:
    """Where the search stands against its best baseline (live), and its answer once decided: plain text lines
    for ``status``, the dashboard's study note and the report."""
    lines = []
    standing = results.standing()
    if standing:
        bar, best = standing['bar'], standing['best']
        text = f'the bar: {baseline_label(bar["name"])} {bar["value"]:.4f} (mean of {bar["seeds"]} seeds)'
        if best is not None:
            text += (f'; best genome so far {best["value"]:.4f} (mean of {best["evaluations"]}), '
                     f'{standing["gap"]:+.4f} against it')
        lines.append(text)
    final = results.final_runs()
    if final:   # each finalist's mean so far under the fuller proxy, best first
        means = sorted(((sum(e['runs'].values()) / len(e['runs']), name, e) for name, e in final.items() if e['runs']),
                       key=lambda row: -row[0])
        lines.append('final rung: ' + '; '.join(
            f'{(e["label"] if e["kind"] == "genome" else baseline_label(name))[:60]} {mean:.4f} '
            f'({len(e["runs"])} seed(s){", a run failed" if e["failed"] else ""})' for mean, name, e in means))
    answer = results.answer()
    if answer:
        lines.append(f'answer: {describe_answer(answer)}')
    return lines


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
