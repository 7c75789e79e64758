# The DetKDS searched distiller shipped for the COCO pair reppoints_x101_r50 (detkds.md §10; genome file
# reppoints_x101_r50.json), trained on the demo reppoints pair. The genome's distances end in a mean,
# so the term values do not grow with channels or map size: the published weights are kept as they are.
# Train the teacher first:
#   detkds-search train configs/demo/reppoints_teacher.py --work-dir work_dirs/demo/reppoints_teacher
_base_ = ['../../demo/reppoints_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/demo/reppoints_teacher.py',
                 checkpoint='work_dirs/demo/reppoints_teacher/final.pth'),
    student=dict(config='configs/demo/reppoints_student.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='searched', loss=dict(
            type='SearchedDistillLoss',
            # the same genome as reppoints_x101_r50.json (a test keeps them equal)
            genome=dict(terms={
                'global': dict(transforms=['catt', 'scale_r2', 'norm_N'], distance='l1', weight=10),
            }))),
    ])
