# MGD on the demo retinanet pair. alpha_mgd: the published RetinaNet value x 64: MGD sums over C*H*W and the demo's
# finest level has 64 channels x 32x32 cells, about 1/64 of COCO's 256 x ~100x168 (x4 channels, x16 cells).
# Train the teacher first:
#   detkds-search train configs/demo/retinanet_teacher.py --work-dir work_dirs/demo/retinanet_teacher
# Data, schedule (600 iterations) and runtime come from the student config.
_base_ = ['../../demo/retinanet_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/demo/retinanet_teacher.py',
                 checkpoint='work_dirs/demo/retinanet_teacher/final.pth'),
    student=dict(config='configs/demo/retinanet_student.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='mgd', levels='all', loss=dict(
            type='MGDLoss', student_channels=64, teacher_channels=64, alpha_mgd=0.0013, lambda_mgd=0.65)),
    ])
