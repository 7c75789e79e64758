# FGD (CVPR 2022), FCOS R-101 caffe ms 2x -> R-50 caffe ms: released values (temp 0.8); the
# reference student adds center-sampling/norm-bbox/GIoU; here the student is configs/coco's FCOS R-50 ms 2x.
_base_ = ['../_base_/fcos_r101_to_r50.py']

model = dict(distill_losses=[
    dict(name='fgd', levels='all', loss=dict(
        type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.8,
        alpha_fgd=0.0016, beta_fgd=0.0008, gamma_fgd=0.0008, lambda_fgd=8e-06)),
])
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
