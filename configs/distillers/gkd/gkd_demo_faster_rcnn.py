# GKD (gradient-guided, CAM-weighted imitation) on the demo faster_rcnn pair. alpha_gkd: the published FGD
# alpha of the family x 4 (channel ratio 256/64, as the FGD demo configs); beta_gkd weights only the logged metric.
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
    inherit_neck_head=True,
    distill_losses=[
        dict(name='gkd', levels=[0, 1, 2, 3], loss=dict(
            type='GKDLoss', student_channels=64, teacher_channels=64, alpha_gkd=0.0002, beta_gkd=0.01,
            cam_mode='both', score_thr=0.3, topk=10, split_terms=True)),
    ])
