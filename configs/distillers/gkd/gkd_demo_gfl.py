# GKD (gradient-guided, CAM-weighted imitation) on the demo gfl pair. alpha_gkd: the published FGD alpha of
# the family x 4 (channel ratio 256/64, as the FGD demo configs); beta_gkd weights only the logged metric.
# Train the teacher first:
#   detkds-search train configs/demo/gfl_teacher.py --work-dir work_dirs/demo/gfl_teacher
# Data, schedule (600 iterations) and runtime come from the student config.
_base_ = ['../../demo/gfl_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/demo/gfl_teacher.py',
                 checkpoint='work_dirs/demo/gfl_teacher/final.pth'),
    student=dict(config='configs/demo/gfl_student.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='gkd', levels='all', loss=dict(
            type='GKDLoss', student_channels=64, teacher_channels=64, alpha_gkd=0.004, beta_gkd=0.5,
            cam_mode='both', score_thr=0.3, topk=10, split_terms=True)),
    ])
