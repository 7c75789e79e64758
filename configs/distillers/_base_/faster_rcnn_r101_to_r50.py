# The COCO pair Faster R-CNN R-101 -> R-50 (configs/coco/pairs.py: faster_rcnn_r101_to_r50) as a DetectionDistiller:
# the teacher with its model-zoo checkpoint, the student, the teacher's neck and head inherited by the
# student. A method config adds its distill_losses, optimizer and schedule (and sets
# inherit_neck_head=False where the method does not inherit). Data, schedule and runtime otherwise come
# from the student config.
_base_ = ['../../coco/faster-rcnn_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/../../coco/faster-rcnn_r101_fpn_2x_coco.py',
                 checkpoint='checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'),
    student=dict(config='{{fileDirname}}/../../coco/faster-rcnn_r50_fpn_2x_coco.py'),
    inherit_neck_head=True,
    distill_losses=[])
find_unused_parameters = True    # every method's COCO config trains with it
