"""The published hand-designed distillers on the shared core (FGD, MGD, PKD, GKD, Global-Knowledge, CrossKD,
BCKD), registered in MMDetection's MODELS (losses) and HOOKS (Global-Knowledge prototype generation)."""
from .bckd import BCKDLoss
from .crosskd import CrossKDLoss
from .fgd import FGDLoss
from .gkd import GKDLoss
from .global_kd import GlobalKDLoss, GlobalKDSoftLabelLoss
from .mgd import MGDLoss
from .pkd import PKDLoss
from .prototypes import GlobalKDPrototypeHook

__all__ = ['BCKDLoss', 'CrossKDLoss', 'FGDLoss', 'MGDLoss', 'PKDLoss', 'GKDLoss', 'GlobalKDLoss',
           'GlobalKDSoftLabelLoss', 'GlobalKDPrototypeHook']
