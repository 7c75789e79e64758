"""Resolve a detector given as a config path, an ``mmdet::`` config or an inline dict into a model config."""
from __future__ import annotations

import os
from typing import Any, Mapping

from mmengine.config import Config, ConfigDict

from .errors import ConfigError


def load_config(path: str) -> Config:
    """Load an mmengine config file with a clear error for a missing or broken file."""
    if not path.startswith('mmdet::') and not os.path.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    try:
        return Config.fromfile(path)
    except Exception as exc:  # mmengine raises many types for syntax/import problems
        raise ConfigError(f'cannot read config {path}: {type(exc).__name__}: {exc}') from None


def resolve_model_config(spec: Any, role: str) -> ConfigDict:
    """Return the ``model`` dict of a detector.

    ``spec`` is a config path (``configs/demo/x.py`` or ``mmdet::retinanet/...py``), a full config
    (a mapping with a ``model`` key) or a model dict (a mapping with a ``type`` key).
    """
    if isinstance(spec, str):
        cfg = load_config(spec)
        if 'model' not in cfg:
            raise ConfigError(f'{role} config {spec} has no `model` section')
        model = cfg.model
    elif isinstance(spec, Mapping):
        model = spec['model'] if 'model' in spec else spec
    else:
        raise ConfigError(f'{role}: expected a config path or dict, got {type(spec).__name__}')
    model = ConfigDict(model)
    if 'type' not in model:
        raise ConfigError(f'{role} model config has no `type`')
    check_model_type(model['type'], role)
    return model


def check_model_type(model_type: Any, role: str) -> None:
    from mmdet.registry import MODELS
    if isinstance(model_type, str) and MODELS.get(model_type) is None:
        raise ConfigError(f'{role}: unknown model type {model_type!r} (not registered in mmdet MODELS)')


def build_in_mmdet_scope(model_cfg: Any):
    """Build a detector, data preprocessor or loss from MMDetection's ``MODELS`` inside the ``mmdet`` scope.

    mmengine builds nested parts (the data preprocessor) through the current default scope; outside a Runner
    there may be none, so we set it for the build.
    """
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    from . import pretrained_backbone  # noqa: F401  (registers the initialiser the demo backbones name)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(model_cfg)


def pipeline_loads_masks(pipeline: Any) -> bool:
    """Whether a data pipeline loads instance masks (``LoadAnnotations(with_mask=True)``)."""
    return any(isinstance(step, Mapping) and step.get('type') in ('LoadAnnotations', 'mmdet.LoadAnnotations')
               and step.get('with_mask') for step in pipeline or ())


def innermost_dataset(dataset: Mapping) -> Mapping:
    """A dataset config under its wrappers (RepeatDataset, ClassBalancedDataset...)."""
    while isinstance(dataset, Mapping) and 'dataset' in dataset:
        dataset = dataset['dataset']
    return dataset


def config_loads_masks(config_path: str) -> bool:
    """Whether any dataloader of a training config loads instance masks (a Mask R-CNN config)."""
    cfg = load_config(config_path)
    return any(pipeline_loads_masks(innermost_dataset(cfg[key]['dataset']).get('pipeline'))
               for key in ('train_dataloader', 'val_dataloader', 'test_dataloader')
               if cfg.get(key) and 'dataset' in cfg[key])


def has_mask_head(model: Mapping) -> bool:
    """Whether a detector's model config predicts instance masks (a RoI mask head, or a one-stage mask head)."""
    roi_head = model.get('roi_head') or {}
    return bool(roi_head.get('mask_head') or model.get('mask_head'))
