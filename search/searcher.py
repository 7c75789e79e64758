"""Ray Tune adapter: the evolution proposes, Ray Tune dispatches, storage records (Searcher side of Tune's
Trainable/Searcher split). Everything here runs in the driver process."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional

from ray.tune import Callback
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import Searcher

from workers.tune_trial import FINAL, GROUP, REASON, candidate_result, trial_config

from .evolution import COMPLETE, FAIL, PRUNED, REEVAL, Evolution, Proposal, Result

PROTECTED = 'protected'   # trial config flag: exempt from the early-stopping scheduler
from .study import TrialBook


class EvolutionSearcher(Searcher):
    """Feeds Ray Tune the evolution's proposals and closes their Optuna trials.

    Each Tune trial trains up to ``candidates_per_trial`` proposals of one training seed against one shared
    teacher (workers/tune_trial.py); each proposal keeps its own Optuna trial. ``suggest`` groups what the
    evolution has ready now and never waits to fill a group. It returns None while the evolution waits for a
    generation's stragglers (Tune asks again later) and ``FINISHED`` once the search or its budget is done. A
    candidate whose last result has no final status was stopped by the scheduler: it is recorded PRUNED, never
    COMPLETE with a partial value.
    """

    def __init__(self, evolution: Evolution, book: TrialBook, *, max_new_trials: Optional[int] = None,
                 deadline: Optional[float] = None, on_progress: Callable[[Evolution, TrialBook], None] = None,
                 candidates_per_trial: int = 1):
        super().__init__(metric='AP', mode='max')
        if candidates_per_trial < 1:
            raise ValueError(f'candidates_per_trial must be >= 1, got {candidates_per_trial}')
        self.evolution, self.book = evolution, book
        self.max_new_trials, self.deadline = max_new_trials, deadline
        self.candidates_per_trial = candidates_per_trial
        self.on_progress = on_progress or (lambda *_: None)
        self.started = 0                          # proposals handed out (Optuna trials started)
        self.by_trial: Dict[str, List[Proposal]] = {}      # Ray trial id -> its proposals, in candidate order
        self._routed: Dict[str, Any] = {}         # Ray trial id -> Tune's counter of the last result routed

    def budget_left(self) -> bool:
        if self.max_new_trials is not None and self.started >= self.max_new_trials:
            return False
        return self.deadline is None or time.time() < self.deadline

    def _group_room(self) -> int:
        if self.max_new_trials is None:
            return self.candidates_per_trial
        return min(self.candidates_per_trial, self.max_new_trials - self.started)

    def suggest(self, trial_id: str):
        if self.evolution.finished or not self.budget_left():
            return Searcher.FINISHED if not self.by_trial else None
        group = self.evolution.ask(1)
        if not group:
            return Searcher.FINISHED if self.evolution.finished else None
        # the group's candidates share batches and teacher forwards, hence one training seed
        group += self.evolution.ask(self._group_room() - 1, seed=group[0].seed)
        entries = [{'genome': p.genome.to_json(), 'seed': p.seed, 'optuna_trial': self.book.start(p),
                    'proposal': p.id, 'kind': p.kind, PROTECTED: p.protected} for p in group]
        self.by_trial[trial_id] = group
        self.started += len(group)
        return trial_config(entries)

    def on_trial_result(self, trial_id: str, result: Dict[str, Any]) -> None:
        group = self.by_trial.get(trial_id, ())
        self._routed[trial_id] = result.get(TRAINING_ITERATION)
        for index, proposal in enumerate(group):
            own = candidate_result(result, index, len(group))
            if own:
                self.book.report(proposal.id, own)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict[str, Any]] = None, error: bool = False):
        routed = self._routed.pop(trial_id, None)
        if not self.by_trial.get(trial_id):
            return
        if result and not error and result.get(TRAINING_ITERATION) != routed:
            # the result that ends a trial (the scheduler stopping it at its last milestone) reaches only
            # on_trial_complete: record it in the curves and intermediate values like the others
            self.on_trial_result(trial_id, result)
        group = self.by_trial.pop(trial_id)
        for index, proposal in enumerate(group):
            own = candidate_result(result or {}, index, len(group))
            outcome = _outcome(own, error)
            metrics = {k: v for k, v in own.items() if k.startswith('AP') and isinstance(v, (int, float))}
            self.book.finish(proposal.id, outcome.state, outcome.value,
                             outcome.reason if outcome.state != COMPLETE else '', metrics)
            self.evolution.tell(proposal, outcome)
            self.on_progress(self.evolution, self.book)


def _outcome(result: Dict[str, Any], error: bool) -> Result:
    """One candidate's outcome from its keys of the trial's last result (``error``: the Ray trial crashed)."""
    status = result.get(FINAL)
    if error:
        return Result.fail('the trial crashed in Ray (worker lost or trainable error)')
    if status == COMPLETE:
        return Result.complete(result.get('AP', math.nan))
    if status == FAIL:
        return Result.fail(str(result.get(REASON, 'failed')))
    return Result.pruned(result.get('AP'), f'stopped early by the scheduler at iteration {result.get("iteration")}')


_NOISE = ('Traceback', 'File "', '^', '~', 'class_name:', 'actor_id:', 'namespace:')


def _error_summary(failure: str) -> str:
    """One line from a failure of Tune's error file ('N (occurred at DATE)' then the error): the messages
    without traceback frames, e.g. 'The actor died because its node has died. Node Id: ...'."""
    lines = [line.strip() for line in (failure or '').splitlines()[1:]]
    return ' '.join(line for line in lines if line and not line.startswith(_NOISE))[-800:] or 'unknown error'


class TrialRetryRecorder(Callback):
    """Records in the trial's Optuna record each time Ray Tune re-runs it (FailureConfig.max_failures).

    A trial whose actor or node dies (a preempted or lost worker machine) is restarted by Tune with the same
    config, so it stays the same Optuna trial; Tune tells neither the searcher nor the scheduler. The study
    keeps why (attribute ``ray_retries``) and the trial's curve restarts with the new attempt.
    """

    def __init__(self, searcher: EvolutionSearcher):
        self.searcher = searcher

    def on_trial_recover(self, iteration, trials, trial, **info):
        group = self.searcher.by_trial.get(trial.trial_id)
        if not group:
            return
        try:   # Tune appends each failure to the trial's local error file before calling back
            with open(trial.error_file) as f:
                reason = _error_summary(f.read().rsplit('Failure # ', 1)[-1])
        except (OSError, TypeError) as exc:   # the reason is informative only; never break the run over it
            reason = f'error text unavailable ({exc})'
        for proposal in group:   # a group restarts as a whole: every candidate's curve restarts
            self.searcher.book.retry(proposal.id, f'attempt {trial.num_failures}: {reason}')


class _SparingReevaluations:
    """Early stopping for unprotected single-candidate exploration trials only. Protected proposals run to the
    end (search/evolution.py: generation-0 seeds, a stream's first proposal while it has no fit genome, and
    re-evaluations, which confirm a finalist with another seed: a pruned one would make the finalist unfit on a
    partial result), so no stage, input or finalist is left without complete evaluations. A shared-teacher group
    is never stopped (stopping the trial would stop every candidate on one candidate's AP; the config refuses a
    scheduler with candidates_per_trial > 1, and a group reports no top-level AP anyway)."""

    def on_trial_result(self, tune_controller, trial, result):
        config = trial.config
        if GROUP in config or config.get(PROTECTED) or config.get('kind') == REEVAL:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class ExplorationASHA(_SparingReevaluations, ASHAScheduler):
    pass


class ExplorationMedianStopping(_SparingReevaluations, MedianStoppingRule):
    pass


def build_scheduler(settings: Optional[Dict[str, Any]], iterations: int, eval_interval: int):
    """ASHA or the median rule on the intermediate proxy AP (``time_attr`` = proxy iteration), or None."""
    if not settings:
        return None
    common = dict(time_attr='iteration', metric='AP', mode='max')
    grace = int(settings.get('grace_period', 1)) * eval_interval
    if settings.get('type', 'asha') == 'asha':
        return ExplorationASHA(max_t=iterations, grace_period=grace,
                               reduction_factor=float(settings.get('reduction_factor', 2)), **common)
    return ExplorationMedianStopping(grace_period=float(grace), **common)
