# The DetKDS searched distiller shipped for the COCO pair faster_rcnn_r101_r50 (detkds.md §10; genome file
# faster_rcnn_r101_r50.json), trained on the demo faster_rcnn pair. The genome's distances end in a mean,
# so the term values do not grow with channels or map size: the published weights are kept as they are.
# Train the teacher first:
#   detkds-search train configs/demo/faster_rcnn_teacher.py --work-dir work_dirs/demo/faster_rcnn_teacher
_base_ = ['../../demo/faster_rcnn_student.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/demo/faster_rcnn_teacher.py',
                 checkpoint='work_dirs/demo/faster_rcnn_teacher/final.pth'),
    student=dict(config='configs/demo/faster_rcnn_student.py'),
    inherit_neck_head=True,
    distill_losses=[
        dict(name='searched', loss=dict(
            type='SearchedDistillLoss',
            # the same genome as faster_rcnn_r101_r50.json (a test keeps them equal)
            genome=dict(terms={
                'global': dict(transforms=['catt', 'scale_r2', 'norm_N'], distance='l1', weight=2),
                'fg_bg': dict(transforms=['mask', 'no', 'norm_C'], distance='l1', weight=2),
                'instance': dict(transforms=['mask', 'scale_r1', 'norm_C'], distance='pearson', weight=1),
                'logits': dict(transforms=['softmax_C'], distance='pearson', weight=0.1),
            }))),
    ])
