# FGD on the demo fcos pair (tiny ResNet-18 detectors on the shapes data, 64-channel FPN from stride 4).
# Weights: the published FCOS values x 4. FGD's terms are sums over channels (fg/bg masks are normalised per
# box / per image, so the map size cancels): the demo FPN has 64 channels instead of 256, hence x 256/64.
# Train the teacher first:
#   detkds-search train configs/demo/fcos_teacher.py --work-dir work_dirs/demo/fcos_teacher
# Data, schedule (600 iterations) and runtime come from the student config.
_base_ = ['../../demo/fcos_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/demo/fcos_teacher.py',
                 checkpoint='work_dirs/demo/fcos_teacher/final.pth'),
    student=dict(config='configs/demo/fcos_student.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='fgd', levels='all', loss=dict(
            type='FGDLoss', student_channels=64, teacher_channels=64, temp=0.8,
            alpha_fgd=0.0064, beta_fgd=0.0032, gamma_fgd=0.0032, lambda_fgd=3.2e-05, split_terms=True)),
    ])
