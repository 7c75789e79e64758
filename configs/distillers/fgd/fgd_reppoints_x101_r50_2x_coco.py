# FGD (CVPR 2022), RepPoints-moment X-101-DCN -> R-50 (GN neck+head), 2x: released values.
# The reference hooks the FPN conv before GroupNorm; we use the neck outputs (post-norm), methods.md §0.
_base_ = ['../_base_/reppoints_x101_to_r50.py']

model = dict(distill_losses=[
    dict(name='fgd', levels='all', loss=dict(
        type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.5,
        alpha_fgd=0.0016, beta_fgd=0.0008, gamma_fgd=0.0008, lambda_fgd=8e-06)),
])
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
