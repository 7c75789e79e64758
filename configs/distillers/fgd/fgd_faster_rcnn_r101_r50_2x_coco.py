# FGD (CVPR 2022), Faster R-CNN R-101 -> R-50, 2x: released values; 4 levels P2-P5 (P6 is a max-pool).
_base_ = ['../../../configs/coco/faster-rcnn_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/coco/faster-rcnn_r101_fpn_2x_coco.py',
                 checkpoint='checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'),
    student=dict(config='configs/coco/faster-rcnn_r50_fpn_2x_coco.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='fgd', levels=[0, 1, 2, 3], loss=dict(
            type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.5,
            alpha_fgd=5e-05, beta_fgd=2.5e-05, gamma_fgd=5e-05, lambda_fgd=5e-07)),
    ])
find_unused_parameters = True
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
