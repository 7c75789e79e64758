"""The study in Optuna storage as the record of truth: trial attributes, stale trials, replay records.

Trials are created and closed only by the controller (the Ray driver), so the storage needs to be reachable
from the head node alone; workers just report metrics back through Ray.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Mapping, Optional

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from .evolution import COMPLETE, FAIL, PRUNED, Proposal, Record
from .storage import (ATTR_FAIL_REASON, ATTR_FORMULA, ATTR_GENERATION, ATTR_GENOME, ATTR_PARENTS, ATTR_SEED,
                      ATTR_STAGE, ATTR_WALL_TIME)

ATTR_KEY = 'key'                  # canonical genome hash
ATTR_INPUT = 'input'              # stage-1 knowledge input, or 'combined' in stage 2
ATTR_KIND = 'kind'                # 'explore' | 'reeval'
ATTR_PROTECTED = 'protected'      # exempt from early stopping (seeds, re-evaluations, ...: search/evolution.py)
ATTR_REJECTED = 'rejected'        # a standalone run whose candidate was rejected as degenerate (a result)
ATTR_INTERRUPTED = 'interrupted'  # closed because its controller died or was stopped: re-run on resume
ATTR_METRICS = 'metrics'          # AP, AP50, AP75, APs, APm, APl of the proxy
ATTR_CURVE = 'curve'              # every report of the trial: iteration, loss terms, AP
ATTR_RETRIES = 'ray_retries'      # why Ray re-ran the trial from scratch (e.g. its node died), one line each

STUDY_SPACE_HASH = 'space_hash'
STUDY_PLAN = 'search_plan'
STUDY_CONFIG = 'config'
STUDY_STARTED = 'started_at'
STUDY_PROGRESS = 'progress'
STUDY_CONCURRENCY = 'max_concurrent'
STUDY_CANDIDATES_PER_TRIAL = 'candidates_per_trial'   # shared-teacher group size of the last launch

_STATES = {COMPLETE: TrialState.COMPLETE, FAIL: TrialState.FAIL, PRUNED: TrialState.PRUNED}


def open_study(storage, name: str, create: bool = True) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if create:
        return optuna.create_study(storage=storage, study_name=name, direction='maximize', load_if_exists=True)
    return optuna.load_study(storage=storage, study_name=name)


def study_exists(storage, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


def close_stale_trials(study: optuna.Study, reason: str) -> int:
    """Mark trials left RUNNING/WAITING (a dead or stopped controller) FAIL + interrupted; they are re-run."""
    closed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study._storage.set_trial_user_attr(trial._trial_id, ATTR_INTERRUPTED, True)
        study._storage.set_trial_user_attr(trial._trial_id, ATTR_FAIL_REASON, reason)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        closed += 1
    return closed


def close_interrupted(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Close a trial whose run stopped with its controller: FAIL + interrupted (re-run on resume)."""
    trial.set_user_attr(ATTR_INTERRUPTED, True)
    trial.set_user_attr(ATTR_FAIL_REASON, reason)
    study.tell(trial, state=TrialState.FAIL)


def record_run(study, trial, result: Mapping[str, Any]) -> None:
    """Close a standalone run's trial: COMPLETE with its value, or FAIL with the reason (a rejected candidate,
    a crash); wall time, metrics and curve as user attributes, the curve's AP as intermediate values."""
    trial.set_user_attr(ATTR_WALL_TIME, round(result['seconds'], 3))
    trial.set_user_attr(ATTR_METRICS, result['metrics'])
    if result.get('curve'):
        trial.set_user_attr(ATTR_CURVE, json.dumps(result['curve']))
        for row in result['curve']:   # the AP series, like a search trial's (dashboard curves, fidelity plots)
            if 'AP' in row:
                trial.report(float(row['AP']), step=int(row['iteration']))
    if result['ok']:
        study.tell(trial, result['value'])
    else:
        trial.set_user_attr(ATTR_FAIL_REASON, result['reason'][:2000])
        if result.get('rejected'):
            trial.set_user_attr(ATTR_REJECTED, True)
        study.tell(trial, state=TrialState.FAIL)


def has_complete_run(study: optuna.Study, **attrs) -> bool:
    """Whether a COMPLETE trial carries every one of these user attributes (a reference run already done, e.g.
    ``baseline='pkd', seed=0``): runs outside the evolution are never run twice."""
    return any(all(t.user_attrs.get(k) == v for k, v in attrs.items())
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def replay_records(study: optuna.Study) -> List[Record]:
    """The finished trials as evolution records (in trial order)."""
    records = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL,
                                                          TrialState.PRUNED)):
        attrs = trial.user_attrs
        if ATTR_KEY not in attrs:
            continue   # not a search trial (e.g. a baseline reference run)
        if attrs.get(ATTR_INTERRUPTED) and ATTR_SEED not in attrs:
            continue   # its controller was killed while writing its attributes: nothing ran, nothing to replay
        records.append(Record(
            key=attrs[ATTR_KEY], seed=int(attrs[ATTR_SEED]), state=trial.state.name, value=trial.value,
            stage=int(attrs.get(ATTR_STAGE, 1)), input=attrs.get(ATTR_INPUT, ''),
            generation=int(attrs.get(ATTR_GENERATION, 0)), kind=attrs.get(ATTR_KIND, 'explore'),
            genome=attrs.get(ATTR_GENOME), reason=attrs.get(ATTR_FAIL_REASON, ''),
            interrupted=bool(attrs.get(ATTR_INTERRUPTED, False))))
    return records


def genome_params(space, genome) -> Dict[str, Any]:
    """The genome's genes as Optuna parameters (``global.t1``, ``global.distance``, ``global.weight``, ...),
    with distributions from the search space, so optuna-dashboard can compute parameter importances."""
    params = {}
    for term in genome.terms:
        if not term.enabled:
            continue
        for slot, (op, table) in enumerate(zip(term.transforms, space.slot_tables(term.input)), start=1):
            if op.name in table:
                params[f'{term.input}.t{slot}'] = (op.name, CategoricalDistribution(table))
        distances = space.group_of(term.input).distances
        if term.distance.name in distances:
            params[f'{term.input}.distance'] = (term.distance.name, CategoricalDistribution(distances))
        for name, options in space.input_param_options(term.input).items():   # e.g. cross_head.cross_index
            value = term.input_params[name]
            if value in options:
                params[f'{term.input}.{name}'] = (value, CategoricalDistribution(options))
        params[f'{term.input}.weight'] = (term.weight, FloatDistribution(0.0, 1000.0))
    if genome.strategy is not None and space.strategy:   # stage 2's training-strategy genes
        for gene, options in space.strategy.items():
            params[f'strategy.{gene}'] = (getattr(genome.strategy, gene), CategoricalDistribution(options))
    return params


class TrialBook:
    """Creates and closes the Optuna trial of each proposal."""

    def __init__(self, study: optuna.Study, space=None):
        self.study, self.space = study, space
        self.open: Dict[str, Any] = {}          # proposal id -> optuna.Trial
        self.started: Dict[str, float] = {}
        self.curves: Dict[str, List[Dict[str, float]]] = {}
        self._number_of_key: Dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            key = trial.user_attrs.get(ATTR_KEY)
            if key is not None and key not in self._number_of_key:
                self._number_of_key[key] = trial.number

    def start(self, proposal: Proposal) -> int:
        trial = self.study.ask()
        genome = proposal.genome
        attrs = {ATTR_GENOME: genome.to_json(), ATTR_FORMULA: genome.formula(), ATTR_KEY: proposal.key,
                 ATTR_STAGE: proposal.stage, ATTR_INPUT: proposal.input, ATTR_GENERATION: proposal.generation,
                 ATTR_KIND: proposal.kind, ATTR_SEED: proposal.seed, ATTR_PROTECTED: proposal.protected,
                 ATTR_PARENTS: [self._number_of_key[k] for k in proposal.parents if k in self._number_of_key]}
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        if self.space is not None:
            for name, (value, distribution) in genome_params(self.space, genome).items():
                self.study._storage.set_trial_param(trial._trial_id, name, distribution.to_internal_repr(value),
                                                    distribution)
        self._number_of_key.setdefault(proposal.key, trial.number)
        self.open[proposal.id] = trial
        self.started[proposal.id] = time.time()
        self.curves[proposal.id] = []
        return trial.number

    def report(self, proposal_id: str, result: Mapping[str, Any]) -> None:
        trial = self.open.get(proposal_id)
        if trial is None:
            return
        row = {k: float(v) for k, v in result.items()
               if isinstance(v, (int, float)) and (k == 'iteration' or k.startswith(('loss', 'AP')))}
        if row:
            self.curves[proposal_id].append(row)
        if 'AP' in result and 'iteration' in result:
            trial.report(float(result['AP']), step=int(result['iteration']))

    def retry(self, proposal_id: str, reason: str) -> None:
        """Ray restarts the trial from scratch (its worker or node was lost): same Optuna trial, new attempt.

        The lost attempt's reports are dropped from the curve (the new attempt reports the same iterations
        again); Optuna keeps the first value of an intermediate step, so those may come from the lost attempt.
        """
        trial = self.open.get(proposal_id)
        if trial is None:
            return
        reasons = list(trial.user_attrs.get(ATTR_RETRIES, []))
        trial.set_user_attr(ATTR_RETRIES, reasons + [reason[:1000]])
        self.curves[proposal_id] = []

    def finish(self, proposal_id: str, state: str, value: Optional[float], reason: str = '',
               metrics: Optional[Mapping[str, float]] = None) -> None:
        trial = self.open.pop(proposal_id)
        trial.set_user_attr(ATTR_WALL_TIME, round(time.time() - self.started.pop(proposal_id), 3))
        trial.set_user_attr(ATTR_CURVE, json.dumps(self.curves.pop(proposal_id, [])))
        if metrics:
            trial.set_user_attr(ATTR_METRICS, {k: float(v) for k, v in metrics.items()})
        if reason:
            trial.set_user_attr(ATTR_FAIL_REASON, reason[:2000])
        if state == COMPLETE:
            self.study.tell(trial, float(value))
        else:
            self.study.tell(trial, state=_STATES[state])

    def interrupt_all(self, reason: str) -> int:
        """Close every open trial FAIL + interrupted (re-run on resume); returns how many."""
        closed = list(self.open)
        for proposal_id in closed:
            self.open[proposal_id].set_user_attr(ATTR_INTERRUPTED, True)
            self.finish(proposal_id, FAIL, None, reason)
        return len(closed)
