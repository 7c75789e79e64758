"""``detkds-search status``: where a study stands, read from storage alone (works while a launch runs)."""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional

from optuna.trial import TrialState

from distill_core.errors import ConfigError

from . import study as st
from .fidelity import fidelity_status, format_fidelity_status
from .results import results_of, standing_lines
from .storage import ATTR_WALL_TIME, mask_url, open_storage, resolve_storage_url


def study_status(study_name: str, storage: Optional[str] = None, run_dir: Optional[str] = None) -> Dict[str, Any]:
    run_dir = run_dir or f'runs/{study_name}'
    url = resolve_storage_url(storage, run_dir)
    backend = open_storage(storage, run_dir)
    if not st.study_exists(backend, study_name):
        raise ConfigError(f'no study {study_name!r} in {mask_url(url)}')
    study = st.open_study(backend, study_name, create=False)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    counts['interrupted'] = sum(bool(t.user_attrs.get(st.ATTR_INTERRUPTED)) for t in trials)
    attrs = study.user_attrs
    progress = json.loads(attrs.get(st.STUDY_PROGRESS, '{}') or '{}')
    results = results_of(study, mask_url(url))
    ranked = results.ranked()   # the search's decided winner first, then by mean over seeds; no baselines
    best = ranked[0] if ranked else None
    started = float(attrs.get(st.STUDY_STARTED, time.time()))
    ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
    running = counts['running'] > 0
    elapsed = (time.time() if running or not ends else max(ends)) - started
    walls = [t.user_attrs[ATTR_WALL_TIME] for t in trials if ATTR_WALL_TIME in t.user_attrs
             and not t.user_attrs.get(st.ATTR_INTERRUPTED)]
    budget = (progress.get('counts') or {}).get('max_evaluations')
    done = counts['complete'] + counts['fail'] + counts['pruned'] - counts['interrupted']
    remaining = None
    if walls and budget is not None and not progress.get('finished'):
        remaining = max(budget - done, 0) * (sum(walls) / len(walls)) / int(attrs.get(st.STUDY_CONCURRENCY, 1))
    streams = [dict(input=s['input'], stage=s['stage'], generation=s['generation'], generations=s['generations'],
                    phase=s['phase']) for s in progress.get('streams', [])]
    return dict(study=study_name, storage=mask_url(url), stage=progress.get('stage'), streams=streams,
                finished=bool(progress.get('finished')), trials=counts, budget=budget,
                best=None if best is None else dict(trials=list(best.trials), value=best.value,
                                                    formula=best.formula),
                baselines=results.baselines(),
                elapsed_s=round(elapsed, 1), remaining_s=None if remaining is None else round(remaining, 1),
                fidelity=fidelity_status(study), standing=standing_lines(results))


def format_status(status: Dict[str, Any]) -> str:
    trials = status['trials']
    if status.get('fidelity'):   # a proxy-fidelity study: no stages, no best genome
        return '\n'.join([f'study {status["study"]} ({status["storage"]}): proxy fidelity',
                          f'  trials: {trials["complete"]} complete, {trials["running"]} running, {trials["fail"]} '
                          f'failed ({trials["interrupted"]} interrupted, re-run)']
                         + format_fidelity_status(status['fidelity']))
    lines = [f'study {status["study"]} ({status["storage"]})',
             f'  stage {status["stage"]}' + ('' if not status['finished'] else ' (finished)')]
    for s in status['streams']:
        lines.append(f'    stage {s["stage"]} {s["input"]}: generation {min(s["generation"] + 1, s["generations"])}'
                     f'/{s["generations"]} ({s["phase"]})')
    lines.append(f'  trials: {trials["complete"]} complete, {trials["running"]} running, {trials["fail"]} failed '
                 f'({trials["interrupted"]} interrupted, re-run), {trials["pruned"]} pruned'
                 + (f'; budget {status["budget"]}' if status['budget'] is not None else ''))
    best = status['best']
    lines.append(f'  best: AP {best["value"]:.4f} (mean of trials {best["trials"]}) {best["formula"]}' if best
                 else '  best: none yet')
    if status['baselines']:
        lines.append('  baselines under the same proxy: '
                     + ', '.join(f'{name} {value:.4f}' for name, value in status['baselines'].items()))
    lines += [f'  {line}' for line in status.get('standing') or ()]
    if status.get('fidelity'):
        lines += format_fidelity_status(status['fidelity'])
    remaining = status['remaining_s']
    lines.append(f'  elapsed {status["elapsed_s"]:.0f} s' +
                 (f', about {remaining:.0f} s remaining' if remaining is not None else ''))
    return '\n'.join(lines)
