# CrossKD on the demo gfl pair (tiny ResNet-18 detectors on the shapes data). The demo heads have 2 stacked convs
# instead of 4: cross_index='auto' applies the published rule to that depth (GFL/RetinaNet: before the last conv;
# FCOS: half the tower), which is 1 here. The terms are normalised by the assigner's positives (or, for FCOS, their
# centerness sum), so they do not depend on the FPN width: the published weights are kept. No inheriting strategy
# (as published).
_base_ = ['../../demo/_base_/distill_gfl.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='crosskd', loss=dict(type='CrossKDLoss', cross_index='auto', reg_loss='kl', cls_weight=1.0,
                                       reg_weight=4.0, beta=1.0)),
    ])
