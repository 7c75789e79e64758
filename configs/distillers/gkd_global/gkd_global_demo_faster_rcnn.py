# Global-Knowledge distillation on the demo faster_rcnn pair. The point and soft-label losses are normalised
# by their mask sums / RoI counts, so the published weights (fg 1, bg 4, soft 1) are kept. Rescaled for 128 px images
# with 8-56 px objects: canonical_scale 16 (boxes of 16-32 px -> level 1, ...) instead of 56, prototypes from
# boxes > 8 px, at most 100 images per class, regenerated every 150 of the 600 iterations. Unlike the
# reference (a fully trained student), the demo student starts from scratch, as in the other demo configs.
# Train the teacher first:
#   detkds-search train configs/demo/faster_rcnn_teacher.py --work-dir work_dirs/demo/faster_rcnn_teacher
# Data, schedule (600 iterations) and runtime come from the student config.
_base_ = ['../../demo/faster_rcnn_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/demo/faster_rcnn_teacher.py',
                 checkpoint='work_dirs/demo/faster_rcnn_teacher/final.pth'),
    student=dict(config='configs/demo/faster_rcnn_student.py'),
    inherit_neck_head=False,
    distill_losses=[
        dict(name='gkd_point', levels='all', loss=dict(
            type='GlobalKDLoss', student_channels=64, teacher_channels=64, num_classes=3, canonical_scale=16,
            kd_boxes='proposals', split_terms=True)),
        dict(name='gkd_soft', loss=dict(
            type='GlobalKDSoftLabelLoss', student_channels=64, teacher_channels=64, num_classes=3)),
    ])
custom_hooks = [
    dict(type='GlobalKDPrototypeHook', interval=150, max_images_per_class=100, min_size=(8, 8), batch_size=8),
]
