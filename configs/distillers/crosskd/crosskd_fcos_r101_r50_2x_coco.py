# CrossKD (CVPR 2024), FCOS R-101 caffe ms 2x -> R-50 caffe ms 2x: released values: cross after 2 of 4 stacked
# convs; quality-focal BCE on every point's crossed class scores (weight 0.4) and IoU loss (log) on the crossed
# point distances weighted by the teacher's max score (weight 0.75), both over the positives' centerness sum.
# No inheriting strategy. Schedule: the student's ms 2x (SGD 0.01, grad-clip 35, 24 epochs [16, 22]).
_base_ = ['../_base_/fcos_r101_to_r50.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='crosskd', loss=dict(type='CrossKDLoss', cross_index=2, reg_loss='iou', cls_weight=0.4,
                                       reg_weight=0.75, beta=1.0)),
    ])
