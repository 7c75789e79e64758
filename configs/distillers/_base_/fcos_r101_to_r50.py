# The COCO pair FCOS R-101 -> R-50 (caffe, ms 2x) (configs/coco/pairs.py: fcos_r101_to_r50) as a DetectionDistiller:
# the teacher with its model-zoo checkpoint, the student, the teacher's neck and head inherited by the
# student. A method config adds its distill_losses, optimizer and schedule (and sets
# inherit_neck_head=False where the method does not inherit). Data, schedule and runtime otherwise come
# from the student config.
_base_ = ['../../coco/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/../../coco/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
                 checkpoint='checkpoints/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth'),
    student=dict(config='{{fileDirname}}/../../coco/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py'),
    inherit_neck_head=True,
    distill_losses=[])
find_unused_parameters = True    # every method's COCO config trains with it
