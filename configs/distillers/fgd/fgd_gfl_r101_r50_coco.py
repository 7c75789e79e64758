# FGD (CVPR 2022), GFL R-101 ms 2x -> GFL R-50 (1x base schedule): released values.
_base_ = ['../../../configs/coco/gfl_r50_fpn_1x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/coco/gfl_r101_fpn_ms-2x_coco.py',
                 checkpoint='checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'),
    student=dict(config='configs/coco/gfl_r50_fpn_1x_coco.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='fgd', levels='all', loss=dict(
            type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.5,
            alpha_fgd=0.001, beta_fgd=0.0005, gamma_fgd=0.0005, lambda_fgd=5e-06)),
    ])
find_unused_parameters = True
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
