# FGD on the demo faster_rcnn pair (tiny ResNet-18 detectors on the shapes data, 64-channel FPN from
# stride 4).
# Weights: the published Faster R-CNN values x 4. FGD's terms are sums over channels (fg/bg masks are normalised per
# box / per image, so the map size cancels): the demo FPN has 64 channels instead of 256, hence x 256/64.
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
        dict(name='fgd', levels=[0, 1, 2, 3], loss=dict(
            type='FGDLoss', student_channels=64, teacher_channels=64, temp=0.5,
            alpha_fgd=0.0002, beta_fgd=0.0001, gamma_fgd=0.0002, lambda_fgd=2e-06, split_terms=True)),
    ])
