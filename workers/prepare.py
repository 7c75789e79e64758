"""Inputs of a search before any trial runs: generate the demo data, pretrain the demo backbones and train the
demo teacher when they are missing (once each, cached on disk, under file locks so that concurrent launches
prepare once), then check that the proxy subsets can be drawn.

Each step prints one progress line per tenth of its work with an ETA and ends with its result (accuracy, AP);
the frameworks' own logs go to the step's work folder (``verbose=True`` shows them).
"""
from __future__ import annotations

import os.path as osp
import time
from typing import Any, Callable, Dict, Mapping, Optional

from distill_core.errors import CheckpointError, ConfigError
from workers.settings import (DEFAULT_SOURCE, check_search_config, file_lock, proxy_data_root,  # noqa: F401
                              resolve_path)


# ---------------------------------------------------------------------------------------------- preparation
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
    from distill_core.shapes import add_instance_masks, annotations_without_masks, generate_shapes
    args = {k: generate[k] for k in ('num_train', 'num_val', 'size', 'seed') if generate.get(k) is not None}
    if osp.isfile(osp.join(out, 'annotations', 'val.json')):
        if _search_needs_masks(search_cfg, base_dir) and any(
                annotations_without_masks(osp.join(out, 'annotations', f'{split}.json')) for split in ('train', 'val')):
            log(f'[prepare] {out} has no instance masks (generated before they existed): adding them ({args})')
            with file_lock(out.rstrip('/') + '.lock'):
                add_instance_masks(out, **args)   # same images and boxes; only the annotation files change
        return
    log(f'[prepare] generating the shapes dataset in {out} ({args})')
    start = time.time()
    # generate_shapes writes to a temporary folder and renames it: a concurrent launch sees all or nothing
    generate_shapes(out, **args)
    log(f'[prepare] dataset ready in {time.time() - start:.1f} s')


def _search_needs_masks(search_cfg: Mapping, base_dir: str) -> bool:
    """Whether the student or teacher config loads instance masks (a Mask R-CNN pair)."""
    from distill_core.model_config import config_loads_masks
    paths = [resolve_path(search_cfg[role]['config'], base_dir) for role in ('student', 'teacher')]
    return any(config_loads_masks(path) for path in paths if not path.startswith('mmdet::'))


def backbone_checkpoint(config_path: str, base_dir: str) -> Optional[str]:
    """The absolute path of the pretrained backbone a detector config names (``PretrainedBackbone``), or None."""
    from distill_core.model_config import resolve_model_config
    from distill_core.pretrained_backbone import backbone_checkpoint_of
    path = backbone_checkpoint_of(resolve_model_config(config_path, 'detector'))
    return None if path is None else resolve_path(path, base_dir)


def ensure_backbone(config_path: str, base_dir: str, data_root: Optional[str], settings: Optional[Mapping],
                    log: Callable[[str], None], role: str = 'detector') -> Optional[str]:
    """Make the pretrained backbone of ``config_path`` exist: pretrain it on ``data_root`` when it is missing
    and ``settings`` (``data.pretrain_backbones``) allow it, once, under a file lock; returns its path."""
    checkpoint = backbone_checkpoint(config_path, base_dir)
    if checkpoint is None or osp.isfile(checkpoint):
        return checkpoint
    if settings is None or data_root is None:
        raise CheckpointError(f'{role} pretrained backbone checkpoint not found: {checkpoint} (run `detkds-search '
                              f'pretrain-backbone {config_path}`, or set data.pretrain_backbones in the search config)')
    from workers.backbone_pretrain import pretrain_backbone
    from workers.settings import PretrainSettings
    with file_lock(checkpoint + '.lock'):
        if osp.isfile(checkpoint):   # another launch made it while we waited for the lock
            return checkpoint
        log(f'[prepare] {role} backbone {checkpoint} missing: pretraining it on {data_root} (once)')
        pretrain_backbone(config_path, data_root, checkpoint, PretrainSettings.from_dict(settings), log,
                          label=f'{role} backbone {osp.basename(checkpoint)}')
    return checkpoint


def _pretrain_backbones(search_cfg: Mapping, base_dir: str, log: Callable[[str], None]) -> None:
    """The student's backbone always (every trial initialises from it); the teacher's only when the teacher
    must be trained (a trained teacher loads all its weights from its checkpoint)."""
    roles = ['student']
    if not osp.isfile(resolve_path(search_cfg['teacher']['checkpoint'], base_dir)):
        roles.insert(0, 'teacher')
    settings = (search_cfg.get('data') or {}).get('pretrain_backbones')
    for role in roles:
        config = resolve_path(search_cfg[role]['config'], base_dir)
        ensure_backbone(config, base_dir, proxy_data_root(search_cfg, base_dir), settings, log, role)


def _train_teacher(search_cfg: Mapping, base_dir: str, log: Callable[[str], None], verbose: bool) -> None:
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
    with file_lock(checkpoint + '.lock'):
        if osp.isfile(checkpoint):   # another launch trained it while we waited for the lock
            log(f'[prepare] teacher checkpoint {checkpoint} appeared while waiting: not training')
            return
        from distill_core.pretrained_backbone import relative_to
        from workers.full_training import train, write_weights_only
        options = _teacher_data_options(config, proxy_data_root(search_cfg, base_dir))
        options.update(dict(train_if_missing.get('cfg_options') or {}))
        log(f'[prepare] teacher checkpoint {checkpoint} missing: training {config} in {work_dir} (once; '
            f'full log in {work_dir})')
        with relative_to(base_dir):
            final = train(config, work_dir=work_dir, cfg_options=options,
                          progress=None if verbose else dict(label='teacher', log=log))
        if osp.abspath(final) != osp.abspath(checkpoint):
            write_weights_only(final, checkpoint)
        log(f'[prepare] teacher checkpoint: {checkpoint}')


def _check_config_files(search_cfg: Mapping, base_dir: str) -> None:
    for role in ('teacher', 'student'):
        path = search_cfg[role]['config']
        resolved = resolve_path(path, base_dir)
        if not resolved.startswith('mmdet::') and not osp.isfile(resolved):
            raise ConfigError(f'{role}.config: config file not found: {resolved}')


def prepare_search_inputs(search_cfg: Mapping, base_dir: str = '.', log: Callable[[str], None] = print,
                          source: str = DEFAULT_SOURCE, verbose: bool = False) -> None:
    """Make a search's data, pretrained backbones and teacher checkpoint exist, then check that the proxy subsets
    can be drawn.

    Generates ``data.generate_shapes`` when its ``annotations/val.json`` is missing, pretrains the backbones the
    student and (untrained) teacher configs name with ``data.pretrain_backbones`` when missing, trains the teacher
    with ``teacher.train_if_missing`` when ``teacher.checkpoint`` is missing (each under a file lock, so two
    launches prepare once), and raises ConfigError / CheckpointError / DataError naming what is wrong otherwise.
    ``verbose``: the teacher training's full mmengine log on the console too (else progress lines only).
    """
    check_search_config(search_cfg, source)
    _check_config_files(search_cfg, base_dir)
    _generate_data(search_cfg, base_dir, log)
    _pretrain_backbones(search_cfg, base_dir, log)
    _train_teacher(search_cfg, base_dir, log, verbose)
    from workers.proxy_data import ProxyData
    ProxyData.describe(search_cfg, base_dir)   # the proxy subsets fit in the training set (cheap: JSON only)
