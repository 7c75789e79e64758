"""Checkpoint loading, teacher/student matching and student-only extraction.

torch >= 2.6 unpickles with ``weights_only=True``: mmengine checkpoints carry a few non-tensor objects in
``meta`` (``HistoryBuffer`` in the message hub, numpy scalars and dtypes). Instead of turning the safety off
we allow-list exactly those types, so ``torch.load`` (ours, mmengine's ``load_checkpoint``, runner resume and
MMDetection's ``init_detector``) keeps refusing arbitrary pickled code. Setting ``DETKDS_TRUST_CHECKPOINTS=1``
falls back to a full unpickle for checkpoints from other tools (trusted local files only).
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict, List, Mapping, Tuple

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError

STUDENT_PREFIX = 'student.'


def _allow_mmengine_checkpoint_types() -> None:
    from mmengine.logging.history_buffer import HistoryBuffer
    safe = [HistoryBuffer, np.dtype, np.ndarray]
    safe += [type(np.dtype(t)) for t in ('float64', 'float32', 'float16', 'int64', 'int32', 'bool', 'uint8')]
    try:  # numpy >= 2 keeps the pickling helpers in numpy._core
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    safe += [multiarray.scalar, multiarray._reconstruct]
    torch.serialization.add_safe_globals(safe)


_allow_mmengine_checkpoint_types()


def load_checkpoint_file(path: str, role: str = 'checkpoint') -> dict:
    """Load a checkpoint on CPU; a missing, unreadable or non-checkpoint file gives a CheckpointError."""
    if not path:
        raise CheckpointError(f'{role}: no checkpoint path given')
    if not os.path.isfile(path):
        raise CheckpointError(f'{role} checkpoint not found: {path}')
    trusted = os.environ.get('DETKDS_TRUST_CHECKPOINTS') == '1'
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=not trusted)
    except Exception as exc:
        raise CheckpointError(f'cannot load {role} checkpoint {path}: {type(exc).__name__}: '
                              f'{str(exc).splitlines()[0]}') from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f'{role} checkpoint {path} is not a state dict or mmengine checkpoint')
    return dict(ckpt)


def state_dict_of(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    state = ckpt.get('state_dict', ckpt)
    return {k[7:] if k.startswith('module.') else k: v for k, v in state.items() if torch.is_tensor(v)}


def mismatches(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Tuple[List[str], List[str], List[str]]:
    """Return (missing, unexpected, wrong-shape) keys of ``state`` against ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape)]
    return missing, unexpected, wrong


def load_matching_weights(model: nn.Module, path: str, role: str) -> None:
    """Load ``path`` into ``model`` strictly; any mismatch is an error that says what does not match."""
    state = state_dict_of(load_checkpoint_file(path, role))
    missing, unexpected, wrong = mismatches(model, state)
    # BN ``num_batches_tracked`` buffers are absent from some model-zoo checkpoints; they carry no weights.
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (('missing', missing), ('unexpected', unexpected), ('shape-mismatched', wrong)):
            if keys:
                parts.append(f'{len(keys)} {label} (e.g. {keys[0]})')
        raise CheckpointError(f'{role} checkpoint {path} does not match its config: ' + ', '.join(parts))
    model.load_state_dict(state, strict=False)


def inherit_matching_tensors(student: nn.Module, teacher_state: Mapping[str, torch.Tensor],
                             skip_prefixes: Tuple[str, ...] = ('backbone.',)) -> List[str]:
    """Copy teacher tensors into the student where name and shape match (inheriting strategy).

    The backbone is skipped: the student's backbone differs in design and keeps its own init.
    ``load_state_dict(strict=False)`` still raises on shape mismatch, so we filter first.
    """
    own = student.state_dict()
    copied = {k: v for k, v in teacher_state.items()
              if not k.startswith(skip_prefixes) and k in own and own[k].shape == v.shape}
    student.load_state_dict(copied, strict=False)
    return sorted(copied)


def plain_meta(meta: Mapping) -> dict:
    """Keep only plain Python values of ``meta`` so ``torch.load(weights_only=True)`` reads it anywhere."""
    def clean(value):
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (list, tuple)):
            items = [clean(v) for v in value]
            return None if any(v is _DROP for v in items) else type(value)(items)
        if isinstance(value, Mapping):
            out = {str(k): clean(v) for k, v in value.items()}
            return {k: v for k, v in out.items() if v is not _DROP}
        return _DROP

    kept = {k: clean(v) for k, v in meta.items() if k not in ('message_hub',)}
    return {k: v for k, v in kept.items() if v is not _DROP}


_DROP = object()


def extract_student(ckpt: Mapping) -> dict:
    """Student-only checkpoint: ``student.*`` keys with the prefix stripped, no optimizer, plain meta."""
    state = ckpt.get('state_dict', ckpt)
    student = {k[len(STUDENT_PREFIX):]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
    if not student:
        raise CheckpointError('checkpoint holds no `student.*` weights: is it a DetectionDistiller checkpoint?')
    return {'state_dict': student, 'meta': plain_meta(ckpt.get('meta', {}) or {})}


def save_atomic(obj, path: str) -> None:
    """Write a checkpoint through a temporary file and rename, so a crash never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.pth')
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
