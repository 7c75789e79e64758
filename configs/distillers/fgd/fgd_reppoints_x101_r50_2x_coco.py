# FGD (CVPR 2022), RepPoints-moment X-101-DCN -> R-50 (GN neck+head), 2x: released values.
# The reference hooks the FPN conv before GroupNorm; we use the neck outputs (post-norm), methods.md §0.
_base_ = ['../../../configs/coco/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/coco/reppoints-moment_x101-dconv-c3-c5_fpn-gn_head-gn_2x_coco.py',
                 checkpoint=('checkpoints/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck+head_2x_coco'
                             '_20200329-f87da1ea.pth')),
    student=dict(config='configs/coco/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='fgd', levels='all', loss=dict(
            type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.5,
            alpha_fgd=0.0016, beta_fgd=0.0008, gamma_fgd=0.0008, lambda_fgd=8e-06)),
    ])
find_unused_parameters = True
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
