# RepPoints teacher: the demo RepPoints detector (_base_/reppoints.py, ResNet-18 base 64 + FPN 64) on the
# 1200-iteration schedule of the shapes data.
_base_ = ['./_base_/shapes_detection.py', './_base_/reppoints.py']
