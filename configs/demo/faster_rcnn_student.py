# Faster R-CNN student: the teacher's detector with a 4x narrower ResNet-18 (base_channels 16, ~16x fewer
# backbone FLOPs). FPN and head keep 64 channels, so every neck/head tensor has the teacher's shape
# (the inheriting strategy copies them). Shorter schedule: 600 iterations.
_base_ = ['./faster_rcnn_teacher.py']

model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128]))

max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1),
]
