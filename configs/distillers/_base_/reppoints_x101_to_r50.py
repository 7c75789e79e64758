# The COCO pair RepPoints X-101-DCN -> R-50 (configs/coco/pairs.py: reppoints_x101_to_r50) as a DetectionDistiller:
# the teacher with its model-zoo checkpoint, the student, the teacher's neck and head inherited by the
# student. A method config adds its distill_losses, optimizer and schedule (and sets
# inherit_neck_head=False where the method does not inherit). Data, schedule and runtime otherwise come
# from the student config.
_base_ = ['../../coco/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/../../coco/reppoints-moment_x101-dconv-c3-c5_fpn-gn_head-gn_2x_coco.py',
                 checkpoint=('checkpoints/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck+head_2x_coco'
                             '_20200329-f87da1ea.pth')),
    student=dict(config='{{fileDirname}}/../../coco/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py'),
    inherit_neck_head=True,
    distill_losses=[])
find_unused_parameters = True    # every method's COCO config trains with it
