"""Load a pretrained backbone checkpoint strictly: the demo stand-in for ImageNet initialisation.

Every real student starts from an ImageNet-pretrained backbone; nothing can be downloaded here, so the demo
detectors start from a backbone pretrained on the shapes training images (workers/backbone_pretrain.py) and
name it in their ``init_cfg``::

    backbone=dict(..., init_cfg=dict(type='PretrainedBackbone', checkpoint='work_dirs/demo/backbones/x.pth'))

mmengine's own ``Pretrained`` initialiser loads with ``strict=False`` and only logs what did not match, so a
wrong file would silently leave a randomly initialised backbone: this one raises a one-line CheckpointError
naming the file when it is missing, unreadable, or does not match the backbone (a missing, unexpected or
shape-mismatched tensor). Relative paths resolve against the folder the command runs in, or against the
search's base folder inside a trial (``relative_to``), whose working directory is elsewhere.
"""
from __future__ import annotations

import contextlib
import contextvars
import os.path as osp
from typing import Iterator, Optional

from mmengine.model.weight_init import update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS
from torch import nn

from .checkpoint import load_checkpoint_file, load_matching_weights, state_dict_of
from .errors import CheckpointError

_BASE_DIR: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar('pretrained_backbone_base', default=None)


@contextlib.contextmanager
def relative_to(base_dir: Optional[str]) -> Iterator[None]:
    """Resolve relative ``PretrainedBackbone`` checkpoints against ``base_dir`` inside the block."""
    token = _BASE_DIR.set(osp.abspath(base_dir) if base_dir else None)
    try:
        yield
    finally:
        _BASE_DIR.reset(token)


def resolve_checkpoint(path: str) -> str:
    base = _BASE_DIR.get()
    return path if osp.isabs(path) or base is None else osp.normpath(osp.join(base, path))


def backbone_checkpoint_of(model_cfg) -> Optional[str]:
    """The ``PretrainedBackbone`` checkpoint a detector config's backbone names (as written), or None."""
    init_cfg = ((model_cfg or {}).get('backbone') or {}).get('init_cfg')
    for cfg in (init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]):
        if isinstance(cfg, dict) and cfg.get('type') == 'PretrainedBackbone':
            return cfg.get('checkpoint')
    return None


@WEIGHT_INITIALIZERS.register_module()
class PretrainedBackbone:
    """Initialise a backbone from ``checkpoint`` (a ``{'state_dict': backbone tensors, 'meta': ...}`` file, keys
    without a ``backbone.`` prefix); every tensor must match."""

    def __init__(self, checkpoint: str):
        if not isinstance(checkpoint, str) or not checkpoint:
            raise CheckpointError(f'PretrainedBackbone: expected a checkpoint path, got {checkpoint!r}')
        self.checkpoint = checkpoint

    def __call__(self, module: nn.Module) -> None:
        path = resolve_checkpoint(self.checkpoint)
        if not osp.isfile(path):
            raise CheckpointError(f'pretrained backbone checkpoint not found: {path} (prepare it with '
                                  f'`detkds-search pretrain-backbone`, or launch the demo search, which does)')
        load_matching_weights(module, path, 'pretrained backbone')
        if hasattr(module, '_params_init_info'):   # mmengine's per-parameter initialisation record
            update_init_info(module, init_info=f'PretrainedBackbone: load from {path}')


def checkpoint_matches(module: nn.Module, path: str) -> bool:
    """True when ``path`` loads into ``module`` without a mismatch (for cache checks; errors are False)."""
    try:
        state = state_dict_of(load_checkpoint_file(path, 'pretrained backbone'))
    except CheckpointError:
        return False
    own = module.state_dict()
    return set(own) == set(state) and all(tuple(own[k].shape) == tuple(state[k].shape) for k in own)
