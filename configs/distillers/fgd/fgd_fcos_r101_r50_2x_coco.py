# FGD (CVPR 2022), FCOS R-101 caffe ms 2x -> R-50 caffe ms: released values (temp 0.8); the
# reference student adds center-sampling/norm-bbox/GIoU; here the student is configs/coco's FCOS R-50 ms 2x.
_base_ = ['../../../configs/coco/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/coco/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
                 checkpoint='checkpoints/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth'),
    student=dict(config='configs/coco/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='fgd', levels='all', loss=dict(
            type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.8,
            alpha_fgd=0.0016, beta_fgd=0.0008, gamma_fgd=0.0008, lambda_fgd=8e-06)),
    ])
find_unused_parameters = True
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
