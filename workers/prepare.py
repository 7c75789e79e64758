"""Inputs of a search before any trial runs: check the search config's teacher/student/data/proxy sections,
generate the demo data and train the demo teacher when they are missing (once, cached on disk).

Every relative path of a search config resolves against ``base_dir`` (the folder ``launch`` ran in): trial
workers run in another working directory, so nothing here relies on the cwd.
"""
from __future__ import annotations

import contextlib
import fcntl
import numbers
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Union

from distill_core.errors import CheckpointError, ConfigError

DEFAULT_SOURCE = '<search config>'

TEACHER_KEYS = {'config', 'checkpoint', 'train_if_missing'}
TRAIN_IF_MISSING_KEYS = {'work_dir', 'cfg_options'}
STUDENT_KEYS = {'config'}
DATA_KEYS = {'generate_shapes', 'data_root'}
GENERATE_KEYS = {'out', 'num_train', 'num_val', 'size', 'seed'}
REJECT_KEYS = {'check_iterations', 'max_loss'}
PROXY_KEYS = {'train_images', 'val_images', 'subset_seed', 'iterations', 'batch_size', 'val_batch_size',
              'optimizer', 'grad_clip', 'inherit_neck_head', 'report_interval', 'eval_interval', 'reject',
              'num_workers', 'amp', 'teacher_cache', 'teacher_cache_max_gb'}


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
    amp: bool = True                               # bfloat16 autocast when the trial runs on a GPU (never on CPU)
    teacher_cache: Union[str, bool] = 'auto'       # teacher features of the proxy subset memory-mapped
    teacher_cache_max_gb: float = 4.0              # (workers/teacher_cache.py): 'auto' where it pays, True, False

    @property
    def eval_batch_size(self) -> int:
        return self.val_batch_size or self.batch_size


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
    teacher_cache = proxy.get('teacher_cache', 'auto')
    if not (teacher_cache == 'auto' or isinstance(teacher_cache, bool)):
        check.fail('proxy.teacher_cache', f'expected "auto", True or False, got {teacher_cache!r}')
    max_gb = proxy.get('teacher_cache_max_gb')
    if max_gb is not None and (not _is_number(max_gb) or max_gb <= 0):
        check.fail('proxy.teacher_cache_max_gb', f'expected a positive number of GB, got {max_gb!r}')
    reject = check.section(proxy, 'reject', REJECT_KEYS, required=False) if proxy.get('reject') is not None else {}
    check.int_at_least(reject, 'proxy.reject', 'check_iterations', 0)
    max_loss = reject.get('max_loss')
    if max_loss is not None and (not _is_number(max_loss) or max_loss <= 0):
        check.fail('proxy.reject.max_loss', f'expected a positive number, got {max_loss!r}')

    settings = {k: v for k, v in proxy.items() if k != 'reject' and v is not None}
    if 'optimizer' in settings:
        settings['optimizer'] = dict(settings['optimizer'])
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


# ---------------------------------------------------------------------------------------------- preparation
@contextlib.contextmanager
def _file_lock(path: str):
    """An exclusive ``flock`` on ``path`` (created if missing): one launch trains, the others wait."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'a') as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _teacher_data_options(config_path: str, data_root: Optional[str]) -> Dict[str, Any]:
    """Config overrides that point the teacher's dataloaders and evaluators at the search's data root."""
    if data_root is None:
        return {}
    from distill_core.model_config import load_config
    from workers.full_training import use_data_root
    cfg = use_data_root(load_config(config_path), data_root)
    return {key: cfg[key].to_dict() for split in ('train', 'val', 'test')
            for key in (f'{split}_dataloader', f'{split}_evaluator') if cfg.get(key)}


def _generate_data(search_cfg: Mapping, base_dir: str, log: Callable[[str], None]) -> None:
    generate = (search_cfg.get('data') or {}).get('generate_shapes')
    if not generate:
        return
    out = resolve_path(generate['out'], base_dir)
    if osp.isfile(osp.join(out, 'annotations', 'val.json')):
        return
    from distill_core.shapes import generate_shapes
    args = {k: generate[k] for k in ('num_train', 'num_val', 'size', 'seed') if generate.get(k) is not None}
    log(f'[prepare] generating the shapes dataset in {out} ({args})')
    start = time.time()
    # generate_shapes writes to a temporary folder and renames it: a concurrent launch sees all or nothing
    generate_shapes(out, **args)
    log(f'[prepare] dataset ready in {time.time() - start:.1f} s')


def _train_teacher(search_cfg: Mapping, base_dir: str, log: Callable[[str], None]) -> None:
    teacher = search_cfg['teacher']
    checkpoint = resolve_path(teacher['checkpoint'], base_dir)
    if osp.isfile(checkpoint):
        return
    train_if_missing = teacher.get('train_if_missing')
    if not train_if_missing:
        raise CheckpointError(f'teacher.checkpoint not found: {checkpoint} (train the teacher first, or set '
                              f'teacher.train_if_missing)')
    config = resolve_path(teacher['config'], base_dir)
    work_dir = resolve_path(train_if_missing['work_dir'], base_dir)
    with _file_lock(checkpoint + '.lock'):
        if osp.isfile(checkpoint):   # another launch trained it while we waited for the lock
            log(f'[prepare] teacher checkpoint {checkpoint} appeared while waiting: not training')
            return
        from workers.full_training import train, write_weights_only
        options = _teacher_data_options(config, proxy_data_root(search_cfg, base_dir))
        options.update(dict(train_if_missing.get('cfg_options') or {}))
        log(f'[prepare] teacher checkpoint {checkpoint} missing: training {config} in {work_dir} (once)')
        start = time.time()
        final = train(config, work_dir=work_dir, cfg_options=options)
        if osp.abspath(final) != osp.abspath(checkpoint):
            write_weights_only(final, checkpoint)
        log(f'[prepare] teacher trained in {time.time() - start:.0f} s: {checkpoint}')


def _check_config_files(search_cfg: Mapping, base_dir: str) -> None:
    for role in ('teacher', 'student'):
        path = search_cfg[role]['config']
        resolved = resolve_path(path, base_dir)
        if not resolved.startswith('mmdet::') and not osp.isfile(resolved):
            raise ConfigError(f'{role}.config: config file not found: {resolved}')


def prepare_search_inputs(search_cfg: Mapping, base_dir: str = '.', log: Callable[[str], None] = print,
                          source: str = DEFAULT_SOURCE) -> None:
    """Make a search's data and teacher checkpoint exist, then check that the proxy subsets can be drawn.

    Generates ``data.generate_shapes`` when its ``annotations/val.json`` is missing, trains the teacher with
    ``teacher.train_if_missing`` when ``teacher.checkpoint`` is missing (under a file lock, so two launches
    train once), and raises ConfigError / CheckpointError / DataError naming what is wrong otherwise.
    """
    check_search_config(search_cfg, source)
    _check_config_files(search_cfg, base_dir)
    _generate_data(search_cfg, base_dir, log)
    _train_teacher(search_cfg, base_dir, log)
    from workers.proxy_data import ProxyData
    ProxyData.describe(search_cfg, base_dir)   # the proxy subsets fit in the training set (cheap: JSON only)
