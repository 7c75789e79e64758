# GFL student: the teacher's detector (_base_/gfl.py) with a 4x narrower ResNet-18 (base_channels 16,
# ~16x fewer backbone FLOPs). FPN and head keep 64 channels, so every neck/head tensor has the teacher's
# shape (the inheriting strategy copies them). Shorter schedule: 600 iterations (_base_/student_schedule.py).
_base_ = ['./_base_/student_schedule.py', './_base_/gfl.py']

model = dict(
    backbone=dict(base_channels=16,
                  init_cfg=dict(type='PretrainedBackbone',
                                checkpoint='{{$DETKDS_DEMO_BACKBONES:work_dirs/demo/backbones}}/resnet18_w16.pth')),
    neck=dict(in_channels=[16, 32, 64, 128]))
