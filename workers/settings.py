"""The search config's sections that workers read (teacher, student, data, proxy): checked, with defaults.

``check_search_config`` validates structure and values only (no file access) and returns the proxy settings;
``resolve_path`` and ``proxy_data_root`` say where a search's files are. Every relative path of a search config
resolves against ``base_dir`` (the folder ``launch`` ran in): trial workers run in another working directory,
so nothing here relies on the cwd.
"""
from __future__ import annotations

import contextlib
import fcntl
import numbers
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from distill_core.errors import ConfigError

DEFAULT_SOURCE = '<search config>'

TEACHER_KEYS = {'config', 'checkpoint', 'train_if_missing'}
TRAIN_IF_MISSING_KEYS = {'work_dir', 'cfg_options'}
STUDENT_KEYS = {'config'}
DATA_KEYS = {'generate_shapes', 'data_root', 'pretrain_backbones'}
GENERATE_KEYS = {'out', 'num_train', 'num_val', 'size', 'seed'}
REJECT_KEYS = {'check_iterations', 'max_loss'}
PROXY_KEYS = {'train_images', 'val_images', 'subset_seed', 'iterations', 'batch_size', 'val_batch_size',
              'optimizer', 'grad_clip', 'inherit_neck_head', 'report_interval', 'eval_interval', 'reject',
              'num_workers', 'amp', 'teacher_cache', 'teacher_cache_max_gb', 'metric',
              'level_pairing',   # heterogeneous pairs: DetectionDistiller(level_pairing=...), distill_core/levels.py
              'lr_steps', 'lr_gamma'}
PROXY_METRICS = ('bbox', 'segm')   # the fitness: box AP, or mask AP (a student with a mask head)


def resolve_path(path: str, base_dir: str) -> str:
    """An absolute path: ``path`` as is when absolute (or an ``mmdet::`` config), else under ``base_dir``."""
    if path.startswith('mmdet::') or osp.isabs(path):
        return path
    return osp.normpath(osp.join(osp.abspath(base_dir), path))


# ---------------------------------------------------------------------------------------------- proxy
@dataclass(frozen=True)
class RejectSettings:
    check_iterations: int = 5     # the first N iterations are checked for exploding distillation terms
    max_loss: float = 1e4         # a loss_searched* term above this in those iterations rejects the trial


@dataclass(frozen=True)
class ProxySettings:
    """The ``proxy`` section with its defaults filled in (see configs/search/demo_retinanet.py)."""
    train_images: Union[int, float]
    val_images: Union[int, float]
    iterations: int
    batch_size: int
    subset_seed: int = 0
    val_batch_size: Optional[int] = None           # default: batch_size
    optimizer: Dict[str, Any] = field(default_factory=lambda: dict(type='AdamW', lr=1e-3, weight_decay=1e-4))
    grad_clip: Optional[float] = None              # max gradient L2 norm, None = no clipping
    inherit_neck_head: bool = False
    report_interval: int = 10
    eval_interval: Optional[int] = None            # None: AP only at the end
    reject: RejectSettings = RejectSettings()
    num_workers: int = 0
    amp: bool = True                               # bfloat16 backbone/neck forwards on a GPU (never on CPU)
    teacher_cache: Union[str, bool] = 'auto'       # teacher features of the proxy subset memory-mapped
    teacher_cache_max_gb: float = 4.0              # (workers/teacher_cache.py): 'auto' where it pays, True, False
    level_pairing: str = 'stride'                  # FPN levels: equal strides, or PKD's index + resize ('index')
    metric: str = 'bbox'                           # fitness AP: 'bbox' or 'segm' (mask AP, a mask-head student)
    # step decay as the full schedule's MultiStepLR: the lr is multiplied by lr_gamma after each of these fractions
    # of the proxy's iterations (e.g. (0.75,) as the demo's x0.1 at 450 of 600); () = a constant lr
    lr_steps: Tuple[float, ...] = ()
    lr_gamma: float = 0.1

    def lr_factor(self, iteration: int) -> float:
        """The lr multiplier of the 1-based ``iteration`` (mmengine's MultiStepLR counts from 0: the step at
        milestone m applies from the (m+1)-th iteration on)."""
        passed = sum(1 for step in self.lr_steps if iteration - 1 >= int(round(step * self.iterations)))
        return self.lr_gamma ** passed

    @property
    def eval_batch_size(self) -> int:
        return self.val_batch_size or self.batch_size


# ---------------------------------------------------------------------------------------------- pretraining
@dataclass(frozen=True)
class PretrainSettings:
    """Backbone pretraining on the shapes data (``data.pretrain_backbones``, workers/backbone_pretrain.py)."""
    # sized for a 2-core machine: the teacher-width ResNet-18 takes ~0.5 s per step of 32 crops of 48 px there
    iterations: int = 600
    batch_size: int = 32
    crop_size: int = 48
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 50                      # linear warm-up iterations, then cosine decay to 0
    background_fraction: float = 0.25
    val_crops: int = 512                  # held-out crops (val split) for the reported accuracy
    seed: int = 0

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]], source: str = 'pretrain settings') -> 'PretrainSettings':
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f'{source}: unknown key {unknown[0]!r} (allowed: {", ".join(sorted(known))})')
        settings = cls(**values)
        for name in ('iterations', 'batch_size', 'crop_size', 'val_crops'):
            value = getattr(settings, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f'{source}: {name} must be a positive integer, got {value!r}')
        if not 0 <= settings.background_fraction < 1:
            raise ConfigError(f'{source}: background_fraction must be in [0, 1)')
        return settings


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _Checker:
    """Raises ConfigError naming ``<section>.<key>`` and the config file."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str):
        raise ConfigError(f'{self.source}: {key}: {message}')

    def section(self, cfg: Mapping, key: str, allowed: set, required: bool = True) -> Dict[str, Any]:
        value = cfg.get(key)
        if value is None:
            if required:
                self.fail(key, 'missing section')
            return {}
        if not isinstance(value, Mapping):
            self.fail(key, f'expected a dict, got {type(value).__name__}')
        unknown = sorted(set(value) - allowed)
        if unknown:
            self.fail(f'{key}.{unknown[0]}', f'unknown key (allowed: {", ".join(sorted(allowed))})')
        return dict(value)

    def path(self, section: Mapping, key: str, name: str, required: bool = True) -> None:
        value = section.get(name)
        if value is None and not required:
            return
        if not isinstance(value, str) or not value:
            self.fail(f'{key}.{name}', f'expected a path, got {value!r}')

    def int_at_least(self, section: Mapping, key: str, name: str, minimum: int, required: bool = False) -> None:
        if name not in section or section[name] is None:
            if required:
                self.fail(f'{key}.{name}', 'required')
            return
        value = section[name]
        if not _is_int(value) or value < minimum:
            self.fail(f'{key}.{name}', f'expected an integer >= {minimum}, got {value!r}')

    def count_or_fraction(self, section: Mapping, key: str, name: str) -> None:
        value = section.get(name)
        if _is_int(value) and value >= 1:
            return
        if _is_number(value) and not _is_int(value) and 0 < value < 1:
            return
        self.fail(f'{key}.{name}', f'expected an image count (int >= 1) or a fraction in (0, 1), got {value!r}')


def check_search_config(search_cfg: Mapping, source: str = DEFAULT_SOURCE) -> ProxySettings:
    """Validate the teacher, student, data and proxy sections; return the proxy settings with defaults.

    Only structure and values are checked here (no file access): file existence is ``prepare_search_inputs``'s
    job, since the demo data and teacher may legitimately be missing until then.
    """
    check = _Checker(source)
    teacher = check.section(search_cfg, 'teacher', TEACHER_KEYS)
    check.path(teacher, 'teacher', 'config')
    check.path(teacher, 'teacher', 'checkpoint')
    if teacher.get('train_if_missing') is not None:
        train = check.section(teacher, 'train_if_missing', TRAIN_IF_MISSING_KEYS)
        check.path(train, 'teacher.train_if_missing', 'work_dir')
        if train.get('cfg_options') is not None and not isinstance(train['cfg_options'], Mapping):
            check.fail('teacher.train_if_missing.cfg_options', 'expected a dict of config overrides')
    student = check.section(search_cfg, 'student', STUDENT_KEYS)
    check.path(student, 'student', 'config')

    data = check.section(search_cfg, 'data', DATA_KEYS, required=False)
    check.path(data, 'data', 'data_root', required=False)
    generate = None
    if data.get('generate_shapes') is not None:
        generate = check.section(data, 'generate_shapes', GENERATE_KEYS)
        check.path(generate, 'data.generate_shapes', 'out')
        for name, minimum in (('num_train', 3), ('num_val', 3), ('size', 32), ('seed', 0)):
            check.int_at_least(generate, 'data.generate_shapes', name, minimum)

    if data.get('pretrain_backbones') is not None:
        pretrain = data['pretrain_backbones']
        if not isinstance(pretrain, Mapping):
            check.fail('data.pretrain_backbones', 'expected a dict of pretraining settings (dict() for the defaults)')
        PretrainSettings.from_dict(pretrain, f'{source}: data.pretrain_backbones')

    proxy = check.section(search_cfg, 'proxy', PROXY_KEYS)
    for name in ('train_images', 'val_images'):
        check.count_or_fraction(proxy, 'proxy', name)
    for name in ('iterations', 'batch_size'):
        check.int_at_least(proxy, 'proxy', name, 1, required=True)
    for name in ('val_batch_size', 'report_interval', 'eval_interval'):
        check.int_at_least(proxy, 'proxy', name, 1)
    check.int_at_least(proxy, 'proxy', 'subset_seed', 0)
    check.int_at_least(proxy, 'proxy', 'num_workers', 0)
    train_n, val_n = proxy['train_images'], proxy['val_images']
    if _is_int(train_n) == _is_int(val_n):
        # both counts or both fractions: they must fit in the training set together (disjoint subsets)
        total = train_n + val_n
        if not _is_int(train_n) and total > 1:
            check.fail('proxy.val_images', f'train_images + val_images = {total:g} > 1: the subsets are disjoint')
        if _is_int(train_n) and generate is not None and total > generate.get('num_train', 600):
            check.fail('proxy.val_images', f'train_images + val_images = {total} exceeds the '
                       f'{generate.get("num_train", 600)} generated training images (data.generate_shapes)')
    if 'optimizer' in proxy:
        optimizer = proxy['optimizer']
        if not isinstance(optimizer, Mapping) or not isinstance(optimizer.get('type'), str):
            check.fail('proxy.optimizer', f'expected dict(type=<torch optimizer>, lr=...), got {optimizer!r}')
        lr = optimizer.get('lr')
        if lr is not None and (not _is_number(lr) or lr <= 0):
            check.fail('proxy.optimizer.lr', f'expected a positive number, got {lr!r}')
    grad_clip = proxy.get('grad_clip')
    if grad_clip is not None and (not _is_number(grad_clip) or grad_clip <= 0):
        check.fail('proxy.grad_clip', f'expected a positive max gradient norm or None, got {grad_clip!r}')
    for name in ('inherit_neck_head', 'amp'):
        if not isinstance(proxy.get(name, False), bool):
            check.fail(f'proxy.{name}', f'expected True or False, got {proxy[name]!r}')
    from distill_core.levels import LEVEL_PAIRINGS
    if proxy.get('level_pairing', 'stride') not in LEVEL_PAIRINGS:
        check.fail('proxy.level_pairing', f'expected one of {list(LEVEL_PAIRINGS)}, got {proxy["level_pairing"]!r}')
    if proxy.get('metric', 'bbox') not in PROXY_METRICS:
        check.fail('proxy.metric', f'expected one of {", ".join(PROXY_METRICS)}, got {proxy["metric"]!r}')
    teacher_cache = proxy.get('teacher_cache', 'auto')
    if not (teacher_cache == 'auto' or isinstance(teacher_cache, bool)):
        check.fail('proxy.teacher_cache', f'expected "auto", True or False, got {teacher_cache!r}')
    max_gb = proxy.get('teacher_cache_max_gb')
    if max_gb is not None and (not _is_number(max_gb) or max_gb <= 0):
        check.fail('proxy.teacher_cache_max_gb', f'expected a positive number of GB, got {max_gb!r}')
    steps = proxy.get('lr_steps', ())
    if not (isinstance(steps, (list, tuple)) and all(_is_number(x) and 0 < x < 1 for x in steps)
            and list(steps) == sorted(set(steps))):
        check.fail('proxy.lr_steps', f'expected increasing fractions of proxy.iterations in (0, 1), got {steps!r}')
    gamma = proxy.get('lr_gamma', 0.1)
    if not _is_number(gamma) or not 0 < gamma <= 1:
        check.fail('proxy.lr_gamma', f'expected a factor in (0, 1], got {gamma!r}')
    reject = check.section(proxy, 'reject', REJECT_KEYS, required=False) if proxy.get('reject') is not None else {}
    check.int_at_least(reject, 'proxy.reject', 'check_iterations', 0)
    max_loss = reject.get('max_loss')
    if max_loss is not None and (not _is_number(max_loss) or max_loss <= 0):
        check.fail('proxy.reject.max_loss', f'expected a positive number, got {max_loss!r}')

    settings = {k: v for k, v in proxy.items() if k != 'reject' and v is not None}
    if 'optimizer' in settings:
        settings['optimizer'] = dict(settings['optimizer'])
    if 'lr_steps' in settings:
        settings['lr_steps'] = tuple(float(x) for x in settings['lr_steps'])
    return ProxySettings(**settings, reject=RejectSettings(**{k: v for k, v in reject.items() if v is not None}))


# ---------------------------------------------------------------------------------------------- data root
def proxy_data_root(search_cfg: Mapping, base_dir: str) -> Optional[str]:
    """The data root a search uses: ``data.data_root``, else the generated ``data.generate_shapes.out``,
    else None (the student config's own data_root, resolved against ``base_dir`` by the caller)."""
    data = search_cfg.get('data') or {}
    if data.get('data_root'):
        return resolve_path(data['data_root'], base_dir)
    generate = data.get('generate_shapes')
    if generate:
        return resolve_path(generate['out'], base_dir)
    return None


@contextlib.contextmanager
def file_lock(path: str):
    """An exclusive ``flock`` on ``path`` (created if missing): one launch trains, the others wait."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'a') as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
