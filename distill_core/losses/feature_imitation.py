"""The simplest feature distillation: mean squared error between aligned student and teacher features."""
from mmdet.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class FeatureImitationLoss(nn.Module):
    """``loss_weight * mean((S' - T)^2)`` at one FPN level (the distiller aligns channels)."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, student_feat: Tensor, teacher_feat: Tensor, data_samples=None) -> Tensor:
        return self.loss_weight * (student_feat - teacher_feat).pow(2).mean()
