# Mask R-CNN teacher: the demo Mask R-CNN detector (_base_/mask_rcnn.py, ResNet-18 base 64 + FPN 64 + a small
# FCN mask head) on the 1200-iteration schedule of the shapes data with instance masks.
_base_ = ['./_base_/shapes_instance.py', './_base_/mask_rcnn.py']
