# PKD (NeurIPS 2022), Faster R-CNN R-101 -> R-50, 2x, loss_weight 6 per level.
# mmrazor distils neck levels 0-3 only; no inheriting strategy (methods.md §4.2).
_base_ = ['../../../configs/coco/faster-rcnn_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/coco/faster-rcnn_r101_fpn_2x_coco.py',
                 checkpoint='checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'),
    student=dict(config='configs/coco/faster-rcnn_r50_fpn_2x_coco.py'),
    inherit_neck_head=False,
    distill_losses=[
        dict(name='pkd', levels=[0, 1, 2, 3], loss=dict(type='PKDLoss', loss_weight=6, resize_stu=True)),
    ])
find_unused_parameters = True
optim_wrapper = dict(clip_grad=None)
