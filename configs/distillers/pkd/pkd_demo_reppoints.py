# PKD on the demo reppoints pair. PKD is a mean over normalised maps, so it does not depend on C, H, W; the weight
# is 2 per level (published: 6-10), the value that worked in the project's calibration run (stack.md): a
# from-scratch tiny student is hurt by an imitation term that dominates its detection loss early on.
# Train the teacher first:
#   detkds-search train configs/demo/reppoints_teacher.py --work-dir work_dirs/demo/reppoints_teacher
# Data, schedule (600 iterations) and runtime come from the student config.
_base_ = ['../../demo/reppoints_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/demo/reppoints_teacher.py',
                 checkpoint='work_dirs/demo/reppoints_teacher/final.pth'),
    student=dict(config='configs/demo/reppoints_student.py'),
    inherit_neck_head=False,
    distill_losses=[
        dict(name='pkd', levels=[0, 1, 2, 3], loss=dict(type='PKDLoss', loss_weight=2.0)),
    ])
