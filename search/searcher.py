"""Ray Tune adapter: the evolution proposes, Ray Tune dispatches, storage records (Searcher side of Tune's
Trainable/Searcher split). Everything here runs in the driver process."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Optional

from ray.tune.search import Searcher

from workers.tune_trial import FINAL

from .evolution import COMPLETE, FAIL, PRUNED, Evolution, Result
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
                'proposal': proposal.id}

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
