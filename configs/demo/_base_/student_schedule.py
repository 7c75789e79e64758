# Shapes data and runtime with the students' shorter schedule: 600 iterations instead of the teachers' 1200.
_base_ = ['./shapes_detection.py']

max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1),
]
