# CrossKD (CVPR 2024), RetinaNet R-101 2x -> R-50 2x: released values: cross after 3 of 4 stacked convs;
# quality-focal BCE on the crossed class scores (weight 1.0) and GIoU on the crossed boxes decoded at the anchors
# (weight 1.0), both over the positives' count. No inheriting strategy. Schedule: the student's 2x (SGD 0.01,
# 24 epochs [16, 22]).
_base_ = ['../_base_/retinanet_r101_to_r50.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='crosskd', loss=dict(type='CrossKDLoss', cross_index=3, reg_loss='giou', cls_weight=1.0,
                                       reg_weight=1.0, beta=1.0)),
    ])
