# FGD on the demo gfl pair (tiny ResNet-18 detectors on the shapes data, 64-channel FPN from stride 4).
# Weights: the published GFL values x 4. FGD's terms are sums over channels (fg/bg masks are normalised per
# box / per image, so the map size cancels): the demo FPN has 64 channels instead of 256, hence x 256/64.
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
        dict(name='fgd', levels='all', loss=dict(
            type='FGDLoss', student_channels=64, teacher_channels=64, temp=0.5,
            alpha_fgd=0.004, beta_fgd=0.002, gamma_fgd=0.002, lambda_fgd=2e-05, split_terms=True)),
    ])
