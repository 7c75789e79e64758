# Mask R-CNN student: the teacher's detector (_base_/mask_rcnn.py) with a 4x narrower ResNet-18 (base_channels 16),
# as the Faster R-CNN student; FPN, RPN, box and mask heads keep the teacher's shapes (the inheriting strategy
# copies them). The students' 600-iteration schedule (as _base_/student_schedule.py, which builds on the
# box-only data).
_base_ = ['./_base_/shapes_instance.py', './_base_/mask_rcnn.py']

model = dict(
    backbone=dict(base_channels=16,
                  init_cfg=dict(type='PretrainedBackbone',
                                checkpoint='{{$DETKDS_DEMO_BACKBONES:work_dirs/demo/backbones}}/resnet18_w16.pth')),
    neck=dict(in_channels=[16, 32, 64, 128]))

max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1),
]
