"""The search config (``configs/search/*.py``): loading, validation and the pieces the controller derives.

Sections: ``teacher``, ``student``, ``data`` (optional), ``proxy`` and ``space`` (read by the workers),
``search`` (the evolution's StagePlan), ``scheduler``, ``resources``, ``budget``, ``full_training`` (export,
search/export.py), ``baselines`` (reference runs, search/baselines.py) and ``final_rung`` (the answer decided
under a fuller proxy, search/final_rung.py).
Every key is checked here or by the component that reads it; a typo is an error naming the key and the file.
"""
from __future__ import annotations

import difflib
import hashlib
import os.path as osp
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from distill_core.errors import ConfigError

SECTIONS = {'teacher', 'student', 'data', 'proxy', 'space', 'search', 'scheduler', 'resources', 'budget',
            'full_training', 'baselines', 'final_rung'}
REQUIRED = ('teacher', 'student', 'proxy', 'search')
RESOURCE_KEYS = {'cpus_per_trial': 1, 'gpus_per_trial': 0, 'max_concurrent': 2, 'candidates_per_trial': 'auto'}
BUDGET_KEYS = {'max_trials': None, 'max_hours': None}
SCHEDULER_KEYS = {'type', 'grace_period', 'reduction_factor'}

# Detector families the search space distinguishes (family-specific distances such as GFL's box KL).
FAMILY_OF_TYPE = {'RetinaNet': 'retinanet', 'FCOS': 'fcos', 'GFL': 'gfl', 'RepPointsDetector': 'reppoints',
                  'FasterRCNN': 'faster_rcnn', 'CascadeRCNN': 'cascade_rcnn', 'MaskRCNN': 'mask_rcnn'}


def _unknown(section: str, given: Mapping, known, source: str) -> None:
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            raise ConfigError(f'{source}: unknown key {section}{"." if section else ""}{key}{hint}')


@dataclass
class SearchConfig:
    """A validated search config: the raw dict (what workers receive) plus derived settings."""
    raw: Dict[str, Any]
    source: str
    base_dir: str
    resources: Dict[str, Any]
    budget: Dict[str, Any]
    scheduler: Optional[Dict[str, Any]]
    space_path: str

    @property
    def space_text(self) -> str:
        with open(self.space_path) as f:
            return f.read()

    @property
    def space_hash(self) -> str:
        return hashlib.sha256(self.space_text.encode()).hexdigest()[:16]

    def family(self) -> Optional[str]:
        """The student's detector family (None: a detector type the space does not know)."""
        return self._family_of('student')

    def teacher_family(self) -> Optional[str]:
        return self._family_of('teacher')

    def families(self) -> Tuple[Optional[str], Optional[str]]:
        """(teacher family, student family): what the space offers depends on both (heterogeneous pairs)."""
        return self.teacher_family(), self.family()

    def _family_of(self, role: str) -> Optional[str]:
        from distill_core.model_config import has_mask_head, resolve_model_config
        config = self.raw[role]['config']
        path = config if not isinstance(config, str) or osp.isabs(config) or config.startswith('mmdet::') \
            else osp.join(self.base_dir, config)
        model = resolve_model_config(path, role)
        family = FAMILY_OF_TYPE.get(model.get('type'))
        if family == 'cascade_rcnn' and has_mask_head(model):   # mmdet types Cascade Mask R-CNN as CascadeRCNN
            return 'cascade_mask_rcnn'
        return family


def load_search_config(path: str, base_dir: Optional[str] = None) -> SearchConfig:
    """Load and validate ``path``; relative paths inside it resolve against ``base_dir`` (default: cwd)."""
    from distill_core.model_config import load_config
    cfg = load_config(path).to_dict()
    base_dir = osp.abspath(base_dir or '.')
    source = path
    given = {k: v for k, v in cfg.items() if not k.startswith('_')}
    _unknown('', given, SECTIONS, source)
    for key in REQUIRED:
        if key not in given:
            raise ConfigError(f'{source}: missing section `{key}`')

    resources = dict(RESOURCE_KEYS, **(given.get('resources') or {}))
    _unknown('resources', resources, RESOURCE_KEYS, source)
    for key in ('cpus_per_trial', 'gpus_per_trial'):
        if not isinstance(resources[key], (int, float)) or resources[key] < 0:
            raise ConfigError(f'{source}: resources.{key} must be a number >= 0, got {resources[key]!r}')
    if not isinstance(resources['max_concurrent'], int) or resources['max_concurrent'] < 1:
        raise ConfigError(f'{source}: resources.max_concurrent must be an integer >= 1')

    budget = dict(BUDGET_KEYS, **(given.get('budget') or {}))
    _unknown('budget', budget, BUDGET_KEYS, source)
    if budget['max_trials'] is not None and (not isinstance(budget['max_trials'], int) or budget['max_trials'] < 1):
        raise ConfigError(f'{source}: budget.max_trials must be a positive integer or None')
    if budget['max_hours'] is not None and (not isinstance(budget['max_hours'], (int, float))
                                            or budget['max_hours'] <= 0):
        raise ConfigError(f'{source}: budget.max_hours must be a positive number or None')

    scheduler = given.get('scheduler')
    if scheduler is not None:
        _unknown('scheduler', scheduler, SCHEDULER_KEYS, source)
        if scheduler.get('type', 'asha') not in ('asha', 'median'):
            raise ConfigError(f'{source}: scheduler.type must be asha or median, got {scheduler.get("type")!r}')

    if resources['candidates_per_trial'] != 'auto':   # 'auto' is resolved at launch (it may probe a GPU)
        resolve_candidates_per_trial(resources, scheduler, source)

    space = given.get('space') or 'search_space.yaml'
    space_path = space if osp.isabs(space) else osp.join(base_dir, space)
    if not osp.isfile(space_path):
        raise ConfigError(f'{source}: space file not found: {space}')

    from workers.settings import check_search_config
    check_search_config(given, source)
    from .evolution import StagePlan
    StagePlan.from_config(given['search'], source)
    return SearchConfig(raw=given, source=source, base_dir=base_dir, resources=resources, budget=budget,
                        scheduler=scheduler, space_path=space_path)


def resolve_candidates_per_trial(resources: Mapping[str, Any], scheduler: Optional[Mapping[str, Any]],
                                 source: str = 'search config', probe: Optional[Callable[[], int]] = None) -> int:
    """How many candidates one Ray Tune trial trains against one shared teacher (``resources.candidates_per_trial``).

    An integer is used as is. ``'auto'``: 1 under a scheduler (early stopping acts on whole trials); on CPU
    trials (``gpus_per_trial == 0``) ``CPU_GROUP_SIZE``; with GPUs, ``probe()`` (the controller runs
    ``workers.group_size.probe_group_size`` where the trials run and passes its answer).
    """
    from workers.group_size import CPU_GROUP_SIZE
    key = 'resources.candidates_per_trial'
    value = resources.get('candidates_per_trial', 'auto')
    if value == 'auto':
        if scheduler:
            return 1
        if not resources.get('gpus_per_trial'):
            return CPU_GROUP_SIZE
        if probe is None:
            raise ValueError(f"{key}='auto' on GPU trials needs a probe of the device memory")
        return int(probe())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{source}: {key} must be an integer >= 1 or 'auto', got {value!r}")
    if value > 1 and scheduler:
        raise ConfigError(f'{source}: {key} = {value} cannot be combined with a `scheduler` section: the scheduler '
                          'stops a whole Ray Tune trial and cannot prune one candidate of a group; use '
                          f"{key} = 1 (or 'auto') with early stopping, or remove `scheduler` to share teachers")
    return value
