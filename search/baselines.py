"""Published baselines under the search's own proxy: reference lines for the dashboard and the report.

``none`` trains the student alone (nothing inherited from the teacher); ``fgd``, ``mgd``, ``pkd``, ``crosskd`` and
``bckd`` train it with that method's recipe: its distillation losses (``FGDLoss`` / ``MGDLoss`` / ``PKDLoss`` /
``CrossKDLoss`` / ``BCKDLoss``) and its training strategy (``baseline_strategy``: whether its config inherits the
teacher's neck/head, its warm-up or decay of the distillation weight), not the proxy's. They run on exactly the
proxy task and budget of the search's trials, on the seeds the search decides its finalists on (``train_seed``
and one per re-evaluation), so that their means compare with the finalists'. Each run is stored as a trial with
user attribute ``baseline=<name>`` and no ``key``: the evolution's replay ignores it; the results rank it beside
the genomes (search/results.py), so the answer may be a published baseline. The run records the strategy it
trained with (``strategy``). Before recipes were honoured every baseline trained with the proxy's strategy: such
a run counts as done only where that is its recipe's (FGD's inheritance under an inheriting proxy), and a run of
the recipe supersedes it in the results.

Where the losses come from: the search config's optional ``baselines`` section, either a list of names or a
dict ``name -> distiller config`` (whose ``model.distill_losses`` is used; ``None`` for ``none``). A bare name
(``fgd``) resolves to the shipped demo config ``configs/distillers/<name>/<name>_demo_<family>.py`` only for a
demo student (``configs/demo/...``): the demo weights are calibrated for the demo's 64-channel FPN, so a COCO
pair must name its method configs explicitly. Without a ``baselines`` section, a demo search runs every default
method that has a shipped demo config for its family (CrossKD: GFL, RetinaNet, FCOS; BCKD: GFL; MGD: RetinaNet,
RepPoints; ...).

Baselines run first, as Ray tasks with the search's trial resources (the controller, before the first exploration
trial: they are the bar the search must beat; or ``detkds-search baselines``); a baseline already COMPLETE for
the same seed is never run again.
"""
from __future__ import annotations

import json
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from distill_core.errors import ConfigError, DetKDSError

from . import study as st
from .results import ATTR_BASELINE, ATTR_STRATEGY, baseline_label
from .storage import ATTR_FORMULA, ATTR_SEED

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


def _model_of(path: str) -> Mapping[str, Any]:
    from distill_core.model_config import load_config
    return load_config(path).get('model') or {}


def _losses_in(model: Mapping[str, Any], path: str) -> List[Dict[str, Any]]:
    losses = model.get('distill_losses')
    if not losses:
        raise ConfigError(f'{path}: model.distill_losses is empty; not a distiller config')
    return [json.loads(json.dumps(loss)) for loss in losses]   # plain dicts for the worker


def _strategy_in(model: Mapping[str, Any]):
    from distill_core.genome import TrainingStrategy
    return TrainingStrategy(bool(model.get('inherit_neck_head', False)), **dict(model.get('distill_schedule') or {}))


def distill_losses_of(path: Optional[str]) -> Optional[List[Dict[str, Any]]]:
    return None if path is None else _losses_in(_model_of(path), path)


def baseline_strategy(path: Optional[str]):
    """How the published recipe trains the student: its config's ``model.inherit_neck_head`` (default False, as
    ``DetectionDistiller``) and ``model.distill_schedule`` (warm-up, decay); the student alone (``path`` None)
    inherits nothing."""
    from distill_core.genome import TrainingStrategy
    return TrainingStrategy(False) if path is None else _strategy_in(_model_of(path))


@dataclass(frozen=True)
class BaselineRecipe:
    """What a baseline trains: its method's losses (None: the student alone) and training strategy."""
    losses: Optional[List[Dict[str, Any]]]
    strategy: Any                         # distill_core.genome.TrainingStrategy

    @property
    def genome(self) -> str:
        """The genome of its proxy runs: no searched term, the recipe's strategy (the losses travel as the run's
        ``distill_losses``)."""
        from distill_core.genome import Genome
        return Genome((), self.strategy).to_json()

    @property
    def attr(self) -> str:
        """The ``strategy`` attribute of its runs: what makes two runs of one baseline the same recipe."""
        return _strategy_json(self.strategy)


def baseline_recipe(path: Optional[str]) -> BaselineRecipe:
    """The baseline's recipe, its config read once."""
    if path is None:
        return BaselineRecipe(None, baseline_strategy(None))
    model = _model_of(path)
    return BaselineRecipe(_losses_in(model, path), _strategy_in(model))


def baseline_genome(path: Optional[str]) -> str:
    return baseline_recipe(path).genome


def strategy_attr(path: Optional[str]) -> str:
    return baseline_recipe(path).attr


def _strategy_json(strategy) -> str:
    return json.dumps(strategy.to_dict(), sort_keys=True)


def recorded_recipe(recorded: Optional[str], search_raw: Mapping[str, Any]) -> str:
    """The recipe (``strategy_attr``) a baseline run trained: the one it records, else the proxy's strategy
    (``search_raw``), which every baseline trained before recipes were honoured."""
    from .export import proxy_strategy
    return recorded if recorded is not None else _strategy_json(proxy_strategy(search_raw))


def has_recipe_run(study, recipe: str, search_raw: Mapping[str, Any], **attrs) -> bool:
    """Whether a COMPLETE run with these attributes trained the baseline's recipe (``recipe``: its
    ``strategy_attr``), by ``recorded_recipe``."""
    if st.has_complete_run(study, **attrs, **{ATTR_STRATEGY: recipe}):
        return True
    return recorded_recipe(None, search_raw) == recipe and st.has_complete_run(study, **attrs, **{ATTR_STRATEGY: None})


def baseline_seeds(search_raw: Mapping[str, Any], source: str = 'search config') -> List[int]:
    """The seeds a search decides its finalists on (train_seed, then one per re-evaluation): the baselines are
    measured on the same ones, so that their means compare with the finalists' means."""
    from .evolution import StagePlan
    plan = StagePlan.from_config(search_raw.get('search') or {}, source, other_keys=('train_seed',))
    return [plan.train_seed + offset for offset in range(plan.reeval_seeds + 1)]


def run_baselines_in_study(study, search_raw: Mapping[str, Any], source: str, base_dir: str = '.',
                           names: Optional[Sequence[str]] = None, log=print, seeds: Optional[Sequence[int]] = None,
                           resources: Optional[Mapping[str, Any]] = None,
                           ray_address: Optional[str] = None) -> Dict[str, Optional[float]]:
    """Run the missing (baseline, seed) proxies of ``study`` as Ray tasks (``resources``: the search config's,
    default one CPU each, two at a time); returns name -> mean proxy AP over ``seeds`` (default
    ``baseline_seeds``) of those run now (None: a run failed). A run already COMPLETE is never run again."""
    from .ray_pool import run_recorded_in_study
    specs = baseline_specs(search_raw, source, names)
    seeds = list(seeds if seeds is not None else baseline_seeds(search_raw, source))
    jobs = []
    recipes = {name: baseline_recipe(path) for name, path in specs.items()}
    for seed in seeds:   # seeds outermost: a run cut short has measured every baseline on its first seeds
        for name, recipe in recipes.items():
            if has_recipe_run(study, recipe.attr, search_raw, **{ATTR_BASELINE: name, ATTR_SEED: seed}):
                continue
            jobs.append(((name, seed), dict(kind='proxy', seed=seed, distill_losses=recipe.losses,
                                            genome=recipe.genome, search_cfg=dict(search_raw),
                                            label=f'baseline {name}')))
    if not jobs:
        log(f'[baselines] {", ".join(specs)}: already evaluated (seeds {seeds})')
        return {}
    log(f'[baselines] {len(jobs)} proxy runs first, the bar the search must beat: '
        + ', '.join(baseline_label(name) for name in specs) + f' (seeds {seeds})')
    values: Dict[str, List[Optional[float]]] = {}

    def reported(job, result):
        name, seed = job
        values.setdefault(name, []).append(result['value'] if result['ok'] else None)
        log(f'[baselines] {name} seed {seed}: ' + (f'proxy AP {result["value"]:.4f}' if result['ok'] else
                                                   f'FAILED ({result["reason"][:100]})'))

    run_recorded_in_study(study, jobs, base_dir, resources,
                          lambda job: {ATTR_BASELINE: job[0], ATTR_SEED: job[1], ATTR_FORMULA: baseline_label(job[0]),
                                       ATTR_STRATEGY: recipes[job[0]].attr},
                          reported, 'interrupted: the baselines stopped before this run finished', ray_address)
    return {name: None if None in runs else sum(runs) / len(runs) for name, runs in values.items()}


def run_baselines(config_path: str, study_name: str, names: Optional[Sequence[str]] = None,
                  storage: Optional[str] = None, run_dir: Optional[str] = None, log=print) -> Dict[str, float]:
    """``detkds-search baselines``: run them into an existing (or new) study of the search config."""
    from .config import load_search_config
    from .storage import open_storage
    cfg = load_search_config(config_path)
    run_dir = run_dir or osp.join('runs', study_name)
    study = st.open_study(open_storage(storage, run_dir), study_name)
    done = run_baselines_in_study(study, cfg.raw, cfg.source, cfg.base_dir, names, log=log, resources=cfg.resources)
    failed = sorted(name for name, value in done.items() if value is None)
    if failed:
        raise DetKDSError(f'baselines failed: {", ".join(failed)} (reasons in the trials\' fail_reason; '
                          '`detkds-search dashboard` shows them)')
    return done
