# MGD (ECCV 2022), RetinaNet X-101-64x4d (ms 3x checkpoint) -> R-50, 2x: released values (methods.md §3.3).
_base_ = ['../../../configs/coco/retinanet_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/coco/retinanet_x101-64x4d_fpn_ms-640-800-3x_coco.py',
                 checkpoint='checkpoints/retinanet_x101_64x4d_fpn_mstrain_3x_coco_20210719_051838-022c2187.pth'),
    student=dict(config='configs/coco/retinanet_r50_fpn_2x_coco.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='mgd', levels='all', loss=dict(
            type='MGDLoss', student_channels=256, teacher_channels=256, alpha_mgd=2e-05, lambda_mgd=0.65)),
    ])
find_unused_parameters = True
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
