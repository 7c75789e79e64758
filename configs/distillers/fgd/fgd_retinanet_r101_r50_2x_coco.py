# FGD (CVPR 2022), RetinaNet R-101 -> R-50, 2x: the released hyperparameters (methods.md §2.5).
_base_ = ['../_base_/retinanet_r101_to_r50.py']

model = dict(distill_losses=[
    dict(name='fgd', levels='all', loss=dict(
        type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.5,
        alpha_fgd=0.001, beta_fgd=0.0005, gamma_fgd=0.0005, lambda_fgd=5e-06)),
])
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
