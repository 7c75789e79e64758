# The COCO pair GFL R-101 (ms 2x) -> R-50 (1x) (configs/coco/pairs.py: gfl_r101_to_r50) as a DetectionDistiller:
# the teacher with its model-zoo checkpoint, the student, the teacher's neck and head inherited by the
# student. A method config adds its distill_losses, optimizer and schedule (and sets
# inherit_neck_head=False where the method does not inherit). Data, schedule and runtime otherwise come
# from the student config.
_base_ = ['../../coco/gfl_r50_fpn_1x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/../../coco/gfl_r101_fpn_ms-2x_coco.py',
                 checkpoint='checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'),
    student=dict(config='{{fileDirname}}/../../coco/gfl_r50_fpn_1x_coco.py'),
    inherit_neck_head=True,
    distill_losses=[])
find_unused_parameters = True    # every method's COCO config trains with it
