# BCKD (ICCV 2023), GFL R-101 ms 2x -> GFL R-50 1x: released values: binary classification distillation on the
# student's class scores (quality-focal BCE, beta 1, weight 1.0) and IoU-based localization distillation (GIoU on
# every position's decoded boxes, weighted by the score gap, weight 4.0), over the positives' count. No feature
# imitation, no inheriting strategy. Schedule: 12 epochs [8, 11], 500-iteration warm-up (ratio 0.001), SGD 0.01.
_base_ = ['../_base_/gfl_r101_to_r50.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='bckd', loss=dict(type='BCKDLoss', cls_weight=1.0, loc_weight=4.0, beta=1.0)),
    ])
