"""The Ray Tune function trainable: one proxy trial, its reports and its outcome.

It never raises for a candidate's own failure: a rejected or crashing candidate ends with a final report
``trial_status='FAIL'`` and the reason, so the search goes on and storage records why. A trial stopped early
by the scheduler simply has no final report (the controller records it as PRUNED).
"""
from __future__ import annotations

import traceback
from typing import Any, Dict, Mapping

FINAL = 'trial_status'


def proxy_trainable(config: Mapping[str, Any], search_cfg: Mapping[str, Any] = None, base_dir: str = '.') -> None:
    from ray import tune

    from workers.proxy import TrialRejected, run_proxy_trial

    def report(metrics: Dict[str, float]) -> None:
        tune.report(dict(metrics))

    try:
        result = run_proxy_trial(search_cfg, config.get('genome'), int(config['seed']), report=report,
                                 base_dir=base_dir)
    except TrialRejected as exc:
        tune.report({FINAL: 'FAIL', 'reason': f'rejected: {exc.reason}'})
        return
    except Exception as exc:  # a crashing candidate is a FAIL with its reason, not the end of the search
        last = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f'{type(exc).__name__}: {exc} (at {last.filename.rsplit("/", 1)[-1]}:{last.lineno})'
        tune.report({FINAL: 'FAIL', 'reason': reason})
        return
    final = {FINAL: 'COMPLETE', 'iteration': result.iterations, 'wall_time': result.wall_time}
    final.update(result.metrics)
    tune.report(final)
