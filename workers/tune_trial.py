"""The Ray Tune function trainable: one proxy trial of one candidate, or of a shared-teacher group of K
candidates (``resources.candidates_per_trial``), their reports and their outcomes.

Trial config: a single candidate keeps the flat form ``{'genome', 'seed', 'optuna_trial', 'proposal', 'kind',
'protected'}`` and reports unprefixed keys (``AP``, ``loss``, ``trial_status``: what a scheduler reads); a group is
``{'candidates': [<flat entry>, ...], 'seed': s}`` and candidate ``k`` reports under ``c<k>/`` (``c0/AP``,
``c0/trial_status``, ``c0/reason``) next to the shared ``iteration``. ``trial_config``, ``candidate_prefix``
and ``candidate_result`` are the one definition of both forms (the searcher reads results with them).

It never raises for a candidate's own failure: a rejected or crashing candidate ends with status ``FAIL`` and
the reason, the group's other candidates go on, and storage records why. Every status is in the trial's LAST
report, together with the last evaluation: the scheduler stops a single-candidate trial as soon as it reaches
its last milestone, so a separate report after it might never be delivered. A trial stopped early by the
scheduler has no final status (the controller records it as PRUNED).
"""
from __future__ import annotations

import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

FINAL = 'trial_status'
REASON = 'reason'
GROUP = 'candidates'


# ------------------------------------------------------------------------------------ the two config forms
def trial_config(entries: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The Tune config of a trial training ``entries`` (each with its own ``seed``; a group shares one)."""
    if len(entries) == 1:
        return dict(entries[0])
    return {GROUP: [dict(entry) for entry in entries], 'seed': entries[0]['seed']}


def trial_candidates(config: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    return list(config[GROUP]) if GROUP in config else [config]


def candidate_prefix(index: int, size: int) -> str:
    return '' if size == 1 else f'c{index}/'


def candidate_result(result: Mapping[str, Any], index: int, size: int) -> Dict[str, Any]:
    """Candidate ``index``'s keys of a trial result, prefix stripped (empty when it has none), with the shared
    ``iteration`` when the candidate has measurements at it (not for a status alone: a candidate that failed
    earlier gets its status in the group's last report)."""
    prefix = candidate_prefix(index, size)
    if not prefix:
        return dict(result)
    own = {key[len(prefix):]: value for key, value in result.items() if key.startswith(prefix)}
    if set(own) - {FINAL, REASON} and 'iteration' in result:
        own['iteration'] = result['iteration']
    return own


def failure_reason(exc: BaseException) -> str:
    """'rejected: <why>' for a degenerate candidate, else the error and where it was raised."""
    from workers.proxy import TrialRejected
    if isinstance(exc, TrialRejected):
        return f'rejected: {exc.reason}'
    frames = traceback.extract_tb(exc.__traceback__)
    where = f' (at {frames[-1].filename.rsplit("/", 1)[-1]}:{frames[-1].lineno})' if frames else ''
    return f'{type(exc).__name__}: {exc}{where}'


# ------------------------------------------------------------------------------------------- reporting
class GroupReporter:
    """Merges the candidates' reports of one iteration into one Tune result and sends the final statuses.

    ``run_proxy_group`` calls candidate k's ``callback(k)`` after its own step, candidates in order, at the same
    iterations. An iteration's result is sent once every candidate still reporting has reported it; a candidate
    that failed meanwhile delays that result to the next iteration's first report (then it is no longer awaited).
    The last iteration is held back and sent by ``close`` with every candidate's status, so that the last report
    carries them all. The callbacks raise only what ``send`` raises (Tune stopping the whole trial).
    """

    def __init__(self, size: int, last_iteration: int, send: Callable[[Dict[str, Any]], None]):
        self.prefixes = [candidate_prefix(k, size) for k in range(size)]
        self.last_iteration, self.send = last_iteration, send
        self.awaited = set(range(size))
        self.pending: Dict[str, Any] = {}
        self.reported: set = set()
        self.iteration: Optional[int] = None

    def callback(self, index: int) -> Callable[[Dict[str, float]], None]:
        prefix = self.prefixes[index]

        def report(entry: Dict[str, float]) -> None:
            iteration = int(entry['iteration'])
            if self.iteration is not None and iteration != self.iteration:
                self._flush()
            self.iteration = iteration
            self.pending.update({prefix + key: value for key, value in entry.items() if key != 'iteration'})
            self.reported.add(index)
            if self.reported >= self.awaited and iteration != self.last_iteration:
                self._flush()

        return report

    def _take(self) -> Dict[str, Any]:
        """The held iteration's merged result (empty when none is held); starts the next one."""
        result = {'iteration': self.iteration, **self.pending} if self.iteration is not None else dict(self.pending)
        self.pending, self.reported, self.iteration = {}, set(), None
        return result

    def _flush(self) -> None:
        self.awaited = set(self.reported)
        self.send(self._take())

    def close(self, outcomes: Sequence[Tuple[Mapping[str, float], Optional[BaseException]]]) -> None:
        """The trial's last report: the held-back iteration, each candidate's final metrics and status."""
        result = self._take()
        for prefix, (metrics, failure) in zip(self.prefixes, outcomes):
            if failure is None:
                result.update({prefix + key: value for key, value in metrics.items()})
                result[prefix + FINAL] = 'COMPLETE'
            else:
                result[prefix + FINAL] = 'FAIL'
                result[prefix + REASON] = failure_reason(failure)
        self.send(result)


# ------------------------------------------------------------------------------------------- trainable
def proxy_trainable(config: Mapping[str, Any], search_cfg: Mapping[str, Any] = None, base_dir: str = '.',
                    teacher_cache_dir: Optional[str] = None, expected_trials: int = 1) -> None:
    """``teacher_cache_dir``/``expected_trials``: the search's teacher feature cache folder and its planned
    number of evaluations (``proxy.teacher_cache`` 'auto' builds the cache only where the search amortises it)."""
    from ray import tune

    from workers.proxy import run_proxy_group

    candidates = trial_candidates(config)
    reporter = GroupReporter(len(candidates), int(search_cfg['proxy']['iterations']), tune.report)
    try:
        results = run_proxy_group(search_cfg, [c.get('genome') for c in candidates],
                                  [int(c['seed']) for c in candidates],
                                  [reporter.callback(k) for k in range(len(candidates))], base_dir=base_dir,
                                  teacher_cache_dir=teacher_cache_dir, expected_trials=expected_trials)
        outcomes = [(result.metrics, result.failure) for result in results]
    except Exception as exc:   # the group could not run at all (e.g. its data or teacher): all candidates FAIL
        outcomes = [({}, exc)] * len(candidates)
    reporter.close(outcomes)
