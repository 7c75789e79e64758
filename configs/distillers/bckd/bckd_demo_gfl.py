# BCKD on the demo gfl pair (tiny ResNet-18 detectors on the shapes data). Both terms are normalised by the
# assigner's positives, so they do not depend on the FPN width: the published GFL weights are kept. No inheriting
# strategy (as published).
_base_ = ['../../demo/_base_/distill_gfl.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='bckd', loss=dict(type='BCKDLoss', cls_weight=1.0, loc_weight=4.0, beta=1.0)),
    ])
