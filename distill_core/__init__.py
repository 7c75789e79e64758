"""detkds-search's shared distillation core: the same code runs in search trials and in full training.

Importing the package is light (errors and registries only), so the controller, ``status`` and storage code
do not pay for torch and MMDetection. Models, losses and ops load on first use: ``distill_core.Genome``,
``distill_core.DetectionDistiller``, ... or ``register_all_modules()`` (what configs get through
``custom_imports=dict(imports=['distill_core.modules'])``).
"""
import importlib

from .errors import CheckpointError, ConfigError, DataError, DetKDSError  # noqa: F401
from .registry import DISTANCES, TRANSFORMS  # noqa: F401  (ops import on first build, see registry.py)

_LAZY = {
    'DetectionDistiller': 'distiller',
    'DistillContext': 'context',
    'Genome': 'genome',
    'OpSpec': 'genome',
    'Term': 'genome',
    'TrainingStrategy': 'genome',
    'SearchedDistillLoss': 'searched_loss',
}


def register_all_modules() -> None:
    """Register the distiller, every loss and every op in their registries (idempotent)."""
    importlib.import_module('.modules', __name__)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f'.{_LAZY[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = sorted(['CheckpointError', 'ConfigError', 'DataError', 'DetKDSError', 'DISTANCES', 'TRANSFORMS',
                  'register_all_modules', *_LAZY])
