# PKD (NeurIPS 2022), RetinaNet X-101-64x4d -> R-50, 2x, loss_weight 10 per level (P7 not distilled).
# mmrazor distils neck levels 0-3 only; no inheriting strategy (methods.md §4.2).
_base_ = ['../../../configs/coco/retinanet_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/coco/retinanet_x101-64x4d_fpn_ms-640-800-3x_coco.py',
                 checkpoint='checkpoints/retinanet_x101_64x4d_fpn_mstrain_3x_coco_20210719_051838-022c2187.pth'),
    student=dict(config='configs/coco/retinanet_r50_fpn_2x_coco.py'),
    inherit_neck_head=False,
    distill_losses=[
        dict(name='pkd', levels=[0, 1, 2, 3], loss=dict(type='PKDLoss', loss_weight=10, resize_stu=True)),
    ])
find_unused_parameters = True
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
