# The demo Faster R-CNN pair as a DetectionDistiller: the trained teacher, the student, the teacher's neck and head
# inherited by the student. A method config adds its distill_losses (and sets inherit_neck_head=False where
# the method does not inherit). Train the teacher first:
#   detkds-search train configs/demo/faster_rcnn_teacher.py --work-dir work_dirs/demo/faster_rcnn_teacher
# Data, schedule (600 iterations) and runtime come from the student config.
_base_ = ['../faster_rcnn_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/../faster_rcnn_teacher.py',
                 checkpoint='work_dirs/demo/faster_rcnn_teacher/final.pth'),
    student=dict(config='{{fileDirname}}/../faster_rcnn_student.py'),
    inherit_neck_head=True,
    distill_losses=[])
