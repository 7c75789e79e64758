"""Distillation losses registered in MMDetection's ``MODELS``."""
from .feature_imitation import FeatureImitationLoss

__all__ = ['FeatureImitationLoss']
