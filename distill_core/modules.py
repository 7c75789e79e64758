"""Importing this module registers everything ``distill_core`` defines (for mmengine ``custom_imports``)."""
from . import checkpoint  # noqa: F401  (allow-lists mmengine checkpoint types for torch.load)
from . import distances, method_ops, transforms  # noqa: F401
from . import pretrained_backbone  # noqa: F401  (the PretrainedBackbone initialiser of the demo configs)
from . import distiller, losses, methods, searched_loss  # noqa: F401
