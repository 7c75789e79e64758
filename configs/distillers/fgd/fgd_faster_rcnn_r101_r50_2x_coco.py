# FGD (CVPR 2022), Faster R-CNN R-101 -> R-50, 2x: released values; 4 levels P2-P5 (P6 is a max-pool).
_base_ = ['../_base_/faster_rcnn_r101_to_r50.py']

model = dict(distill_losses=[
    dict(name='fgd', levels=[0, 1, 2, 3], loss=dict(
        type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.5,
        alpha_fgd=5e-05, beta_fgd=2.5e-05, gamma_fgd=5e-05, lambda_fgd=5e-07)),
])
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
