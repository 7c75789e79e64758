# The demo RetinaNet pair as a DetectionDistiller: the trained teacher, the student, the teacher's neck and head
# inherited by the student. A method config adds its distill_losses (and sets inherit_neck_head=False where
# the method does not inherit). Train the teacher first:
#   detkds-search train configs/demo/retinanet_teacher.py --work-dir work_dirs/demo/retinanet_teacher
# Data, schedule (600 iterations) and runtime come from the student config.
_base_ = ['../retinanet_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/../retinanet_teacher.py',
                 checkpoint='work_dirs/demo/retinanet_teacher/final.pth'),
    student=dict(config='{{fileDirname}}/../retinanet_student.py'),
    inherit_neck_head=True,
    distill_losses=[])
