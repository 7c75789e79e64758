# FGD (CVPR 2022), GFL R-101 ms 2x -> GFL R-50 (1x base schedule): released values.
_base_ = ['../_base_/gfl_r101_to_r50.py']

model = dict(distill_losses=[
    dict(name='fgd', levels='all', loss=dict(
        type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.5,
        alpha_fgd=0.001, beta_fgd=0.0005, gamma_fgd=0.0005, lambda_fgd=5e-06)),
])
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
