"""The published hand-designed distillers on the shared core, registered in MMDetection's MODELS (losses)
and HOOKS (Global-Knowledge prototype generation)."""
from .fgd import FGDLoss
from .gkd import GKDLoss
from .global_kd import GlobalKDLoss, GlobalKDSoftLabelLoss
from .mgd import MGDLoss
from .pkd import PKDLoss
from .prototypes import GlobalKDPrototypeHook

__all__ = ['FGDLoss', 'MGDLoss', 'PKDLoss', 'GKDLoss', 'GlobalKDLoss', 'GlobalKDSoftLabelLoss',
           'GlobalKDPrototypeHook']
