"""Published baselines under the search's own proxy: reference lines for the dashboard and the report.

``none`` trains the student alone; ``fgd``, ``mgd``, ``pkd``, ``crosskd`` and ``bckd`` train it with that method's
distillation losses (``FGDLoss`` / ``MGDLoss`` / ``PKDLoss`` / ``CrossKDLoss`` / ``BCKDLoss``), on exactly the proxy task, seed and budget of the search's
exploration trials. Each run is stored as a trial with user attribute ``baseline=<name>`` and no ``key``, so the
evolution's replay and the export ranking ignore it.

Where the losses come from: the search config's optional ``baselines`` section, either a list of names or a
dict ``name -> distiller config`` (whose ``model.distill_losses`` is used; ``None`` for ``none``). A bare name
(``fgd``) resolves to the shipped demo config ``configs/distillers/<name>/<name>_demo_<family>.py`` only for a
demo student (``configs/demo/...``): the demo weights are calibrated for the demo's 64-channel FPN, so a COCO
pair must name its method configs explicitly. Without a ``baselines`` section, a demo search runs every default
method that has a shipped demo config for its family (CrossKD: GFL, RetinaNet, FCOS; BCKD: GFL; MGD: RetinaNet,
RepPoints; ...).

Baselines run one after another in the calling process (the controller at the end of a search, or
``detkds-search baselines``); a baseline already COMPLETE for the same seed is not run again.
"""
from __future__ import annotations

import json
import os.path as osp
import time
import traceback
from typing import Any, Dict, List, Mapping, Optional, Sequence

from optuna.trial import TrialState

from distill_core.errors import ConfigError, DetKDSError

from . import study as st
from .results import ATTR_BASELINE, baseline_label
from .storage import ATTR_FAIL_REASON, ATTR_FORMULA, ATTR_SEED, ATTR_WALL_TIME

DEFAULT_BASELINES = ('none', 'fgd', 'mgd', 'pkd', 'crosskd', 'bckd')
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def baseline_specs(search_raw: Mapping[str, Any], source: str,
                   names: Optional[Sequence[str]] = None) -> Dict[str, Optional[str]]:
    """``name -> distiller config path`` (None for ``none``) of the baselines to run, checked."""
    section = search_raw.get('baselines')
    if section is None:   # the defaults that serve this pair's family (a non-demo pair fails below, naming them)
        section = [n for n in DEFAULT_BASELINES if n == 'none' or _serves_family(n, search_raw)]
    if isinstance(section, (list, tuple)):
        section = {str(name): None for name in section}
    if not isinstance(section, Mapping):
        raise ConfigError(f'{source}: baselines must be a list of names or a dict name -> distiller config')
    if names:
        missing = [n for n in names if n not in section and n not in DEFAULT_BASELINES]
        if missing:
            raise ConfigError(f'{source}: baselines {missing} are not defined in the config\'s `baselines`')
        section = {n: section.get(n) for n in names}
    specs: Dict[str, Optional[str]] = {}
    for name, path in section.items():
        if name == 'none':
            specs[name] = None
            continue
        if path is None:
            path = _demo_config(name, search_raw, source)
        if not osp.isfile(path):
            raise ConfigError(f'{source}: baselines.{name}: distiller config not found: {path}')
        specs[name] = path
    return specs


def _is_demo_student(search_raw: Mapping[str, Any]) -> bool:
    student = (search_raw.get('student') or {}).get('config')
    folder = osp.dirname(osp.abspath(student)) if isinstance(student, str) else ''
    return (osp.basename(folder), osp.basename(osp.dirname(folder))) == ('demo', 'configs')


def _demo_path(name: str, search_raw: Mapping[str, Any]) -> str:
    from .config import FAMILY_OF_TYPE
    from distill_core.model_config import resolve_model_config
    student = search_raw['student']['config']
    family = FAMILY_OF_TYPE.get(resolve_model_config(student, 'student').get('type'))
    return osp.join(REPO_ROOT, 'configs', 'distillers', name, f'{name}_demo_{family}.py')


def _serves_family(name: str, search_raw: Mapping[str, Any]) -> bool:
    """Whether the method has a shipped demo config for the demo pair's family (True for a non-demo pair)."""
    return not _is_demo_student(search_raw) or osp.isfile(_demo_path(name, search_raw))


def _demo_config(name: str, search_raw: Mapping[str, Any], source: str) -> str:
    if not _is_demo_student(search_raw):
        raise ConfigError(f'{source}: baseline {name!r} has no shipped config for this (non-demo) pair; give '
                          f'baselines=dict({name}=\'configs/distillers/{name}/<your config>.py\')')
    path = _demo_path(name, search_raw)
    if not osp.isfile(path):
        raise ConfigError(f'{source}: baseline {name!r}: no shipped demo config for this demo pair '
                          f'({osp.relpath(path, REPO_ROOT)})')
    return path


def distill_losses_of(path: Optional[str]) -> Optional[List[Dict[str, Any]]]:
    if path is None:
        return None
    from distill_core.model_config import load_config
    model = load_config(path).get('model') or {}
    losses = model.get('distill_losses')
    if not losses:
        raise ConfigError(f'{path}: model.distill_losses is empty; not a distiller config')
    return [json.loads(json.dumps(loss)) for loss in losses]   # plain dicts for the worker


def _done(study, name: str, seed: int) -> bool:
    return any(t.user_attrs.get(ATTR_BASELINE) == name and t.user_attrs.get(ATTR_SEED) == seed
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def run_baseline_trial(study, name: str, losses: Optional[List[Dict]], search_raw: Mapping[str, Any],
                       base_dir: str, seed: int) -> Optional[float]:
    """One baseline proxy run recorded as a trial; returns its AP (None when it failed)."""
    from workers.proxy import run_proxy_trial
    trial = study.ask()
    for attr, value in ((ATTR_BASELINE, name), (ATTR_SEED, seed), (ATTR_FORMULA, baseline_label(name))):
        trial.set_user_attr(attr, value)
    curve: List[Dict[str, float]] = []

    def report(metrics: Mapping[str, Any]) -> None:
        row = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and (k == 'iteration' or k.startswith(('loss', 'AP')))}
        if row:
            curve.append(row)
        if 'AP' in metrics and 'iteration' in metrics:
            trial.report(float(metrics['AP']), step=int(metrics['iteration']))

    started = time.time()
    try:
        result = run_proxy_trial(dict(search_raw), None, seed, report=report, base_dir=base_dir,
                                 distill_losses=losses)
    except DetKDSError as exc:  # a user error (missing data, bad config): close the trial, stop here
        trial.set_user_attr(ATTR_FAIL_REASON, str(exc)[:2000])
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:   # a failing method is recorded with its reason; the others still run
        last = traceback.extract_tb(exc.__traceback__)[-1]
        trial.set_user_attr(ATTR_FAIL_REASON, f'{type(exc).__name__}: {exc} (at {osp.basename(last.filename)}:'
                                              f'{last.lineno})'[:2000])
        value = None
    else:
        trial.set_user_attr(st.ATTR_METRICS, {k: float(v) for k, v in result.metrics.items()})
        value = float(result.metrics['AP'])
    trial.set_user_attr(ATTR_WALL_TIME, round(time.time() - started, 3))
    trial.set_user_attr(st.ATTR_CURVE, json.dumps(curve))
    if value is None:
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)
    return value


def run_baselines_in_study(study, search_raw: Mapping[str, Any], source: str, base_dir: str = '.',
                           names: Optional[Sequence[str]] = None, log=print) -> Dict[str, Optional[float]]:
    """Run the missing baselines of ``study``; returns name -> proxy AP of those run now (None: it failed)."""
    specs = baseline_specs(search_raw, source, names)
    seed = int((search_raw.get('search') or {}).get('train_seed', 0))
    done: Dict[str, Optional[float]] = {}
    for name, path in specs.items():
        if _done(study, name, seed):
            log(f'[baselines] {name}: already evaluated (seed {seed})')
            continue
        log(f'[baselines] {baseline_label(name)} under the proxy (seed {seed})' + (f': {path}' if path else ''))
        value = run_baseline_trial(study, name, distill_losses_of(path), search_raw, base_dir, seed)
        done[name] = value
        if value is not None:
            log(f'[baselines] {name}: proxy AP {value:.4f}')
        else:
            log(f'[baselines] {name}: FAILED (reason in the trial\'s fail_reason)')
    return done


def run_baselines(config_path: str, study_name: str, names: Optional[Sequence[str]] = None,
                  storage: Optional[str] = None, run_dir: Optional[str] = None, log=print) -> Dict[str, float]:
    """``detkds-search baselines``: run them into an existing (or new) study of the search config."""
    from .config import load_search_config
    from .storage import open_storage
    cfg = load_search_config(config_path)
    run_dir = run_dir or osp.join('runs', study_name)
    study = st.open_study(open_storage(storage, run_dir), study_name)
    done = run_baselines_in_study(study, cfg.raw, cfg.source, cfg.base_dir, names, log=log)
    failed = sorted(name for name, value in done.items() if value is None)
    if failed:
        raise DetKDSError(f'baselines failed: {", ".join(failed)} (reasons in the trials\' fail_reason; '
                          '`detkds-search dashboard` shows them)')
    return done
