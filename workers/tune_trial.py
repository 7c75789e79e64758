"""The Ray Tune function trainable: one proxy trial, its reports and its outcome.

It never raises for a candidate's own failure: a rejected or crashing candidate ends with a final report
``trial_status='FAIL'`` and the reason, so the search goes on and storage records why. The proxy's last
evaluation report itself carries ``trial_status='COMPLETE'``: the scheduler stops a trial as soon as it
reaches its last milestone, so a separate report after it might never be delivered. A trial stopped early
by the scheduler has no final status (the controller records it as PRUNED).
"""
from __future__ import annotations

import traceback
from typing import Any, Dict, Mapping

FINAL = 'trial_status'


def proxy_trainable(config: Mapping[str, Any], search_cfg: Mapping[str, Any] = None, base_dir: str = '.') -> None:
    from ray import tune

    from workers.proxy import TrialRejected, run_proxy_trial

    last_iteration = int(search_cfg['proxy']['iterations'])

    def report(metrics: Dict[str, float]) -> None:
        metrics = dict(metrics)
        if metrics.get('iteration') == last_iteration and 'AP' in metrics:
            metrics[FINAL] = 'COMPLETE'
        tune.report(metrics)

    try:
        run_proxy_trial(search_cfg, config.get('genome'), int(config['seed']), report=report,
                                 base_dir=base_dir)
    except TrialRejected as exc:
        tune.report({FINAL: 'FAIL', 'reason': f'rejected: {exc.reason}'})
        return
    except Exception as exc:  # a crashing candidate is a FAIL with its reason, not the end of the search
        last = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f'{type(exc).__name__}: {exc} (at {last.filename.rsplit("/", 1)[-1]}:{last.lineno})'
        tune.report({FINAL: 'FAIL', 'reason': reason})
