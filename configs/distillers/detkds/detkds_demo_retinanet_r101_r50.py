# The DetKDS searched distiller shipped for the COCO pair retinanet_r101_r50 (detkds.md §10; genome file
# retinanet_r101_r50.json), trained on the demo retinanet pair. The genome's distances end in a mean,
# so the term values do not grow with channels or map size: the published weights are kept as they are.
# Train the teacher first:
#   detkds-search train configs/demo/retinanet_teacher.py --work-dir work_dirs/demo/retinanet_teacher
_base_ = ['../../demo/retinanet_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/demo/retinanet_teacher.py',
                 checkpoint='work_dirs/demo/retinanet_teacher/final.pth'),
    student=dict(config='configs/demo/retinanet_student.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='searched', loss=dict(
            type='SearchedDistillLoss',
            # the same genome as retinanet_r101_r50.json (a test keeps them equal)
            genome=dict(terms={
                'global': dict(transforms=['catt', 'scale_r2', 'norm_N'], distance='l1', weight=6),
                'fg_bg': dict(transforms=['no', 'local_s4', 'norm_HW'], distance='l1', weight=2),
            }))),
    ])
