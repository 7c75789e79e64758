# GFL teacher: the demo GFL detector (_base_/gfl.py, ResNet-18 base 64 + FPN 64) on the
# 1200-iteration schedule of the shapes data.
_base_ = ['./_base_/shapes_detection.py', './_base_/gfl.py']
