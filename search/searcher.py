"""Ray Tune adapter: the evolution proposes, Ray Tune dispatches, storage records (Searcher side of Tune's
Trainable/Searcher split). Everything here runs in the driver process."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Optional

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import Searcher

from workers.tune_trial import FINAL

from .evolution import COMPLETE, FAIL, PRUNED, REEVAL, Evolution, Result
from .study import TrialBook


class EvolutionSearcher(Searcher):
    """Feeds Ray Tune the evolution's proposals and closes their Optuna trials.

    ``suggest`` returns None while the evolution waits for a generation's stragglers (Tune asks again later)
    and ``FINISHED`` once the search or its budget is done. A trial whose last result has no final status was
    stopped by the scheduler: it is recorded PRUNED, never COMPLETE with a partial value.
    """

    def __init__(self, evolution: Evolution, book: TrialBook, *, max_new_trials: Optional[int] = None,
                 deadline: Optional[float] = None, on_progress: Callable[[Evolution, TrialBook], None] = None):
        super().__init__(metric='AP', mode='max')
        self.evolution, self.book = evolution, book
        self.max_new_trials, self.deadline = max_new_trials, deadline
        self.on_progress = on_progress or (lambda *_: None)
        self.started = 0
        self.by_trial: Dict[str, Any] = {}      # Ray trial id -> Proposal

    def budget_left(self) -> bool:
        if self.max_new_trials is not None and self.started >= self.max_new_trials:
            return False
        return self.deadline is None or time.time() < self.deadline

    def suggest(self, trial_id: str):
        if self.evolution.finished or not self.budget_left():
            return Searcher.FINISHED if not self.by_trial else None
        proposals = self.evolution.ask(1)
        if not proposals:
            return Searcher.FINISHED if self.evolution.finished else None
        proposal = proposals[0]
        number = self.book.start(proposal)
        self.by_trial[trial_id] = proposal
        self.started += 1
        return {'genome': proposal.genome.to_json(), 'seed': proposal.seed, 'optuna_trial': number,
                'proposal': proposal.id, 'kind': proposal.kind}

    def on_trial_result(self, trial_id: str, result: Dict[str, Any]) -> None:
        proposal = self.by_trial.get(trial_id)
        if proposal is not None:
            self.book.report(proposal.id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict[str, Any]] = None, error: bool = False):
        proposal = self.by_trial.pop(trial_id, None)
        if proposal is None:
            return
        result = result or {}
        status = result.get(FINAL)
        metrics = {k: v for k, v in result.items() if k.startswith('AP') and isinstance(v, (int, float))}
        if error:
            outcome = Result.fail('the trial crashed in Ray (worker lost or trainable error)')
        elif status == COMPLETE:
            outcome = Result.complete(result.get('AP', math.nan))
        elif status == FAIL:
            outcome = Result.fail(str(result.get('reason', 'failed')))
        else:
            last_ap = result.get('AP')
            outcome = Result.pruned(last_ap, f'stopped early by the scheduler at iteration {result.get("iteration")}')
        self.book.finish(proposal.id, outcome.state, outcome.value, outcome.reason if outcome.state != COMPLETE
                         else '', metrics)
        self.evolution.tell(proposal, outcome)
        self.on_progress(self.evolution, self.book)


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
        proposal = self.searcher.by_trial.get(trial.trial_id)
        if proposal is None:
            return
        try:   # Tune appends each failure to the trial's local error file before calling back
            with open(trial.error_file) as f:
                reason = _error_summary(f.read().rsplit('Failure # ', 1)[-1])
        except (OSError, TypeError) as exc:   # the reason is informative only; never break the run over it
            reason = f'error text unavailable ({exc})'
        self.searcher.book.retry(proposal.id, f'attempt {trial.num_failures}: {reason}')


class _SparingReevaluations:
    """Early stopping for exploration trials only: a re-evaluation confirms a finalist with another seed and
    must run to the end (a pruned re-evaluation would make the finalist unfit on a partial result)."""

    def on_trial_result(self, tune_controller, trial, result):
        if trial.config.get('kind') == REEVAL:
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
