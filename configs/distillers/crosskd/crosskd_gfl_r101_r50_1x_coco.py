# CrossKD (CVPR 2024), GFL R-101 ms 2x -> GFL R-50 1x: released values (kd_cfg of the reference release): the
# student crosses into the teacher head after 3 of its 4 stacked convs; quality-focal BCE on the crossed class
# scores (beta 1, weight 1.0) and KL on the crossed box-side distributions (T 1, weight 4.0). No inheriting
# strategy (the student starts from ImageNet). Schedule: the student's 1x (SGD 0.01, 500-iteration warm-up,
# 12 epochs [8, 11]).
_base_ = ['../_base_/gfl_r101_to_r50.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='crosskd', loss=dict(type='CrossKDLoss', cross_index=3, reg_loss='kl', cls_weight=1.0,
                                       reg_weight=4.0, beta=1.0)),
    ])
