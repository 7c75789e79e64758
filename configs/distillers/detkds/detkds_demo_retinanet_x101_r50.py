# The DetKDS searched distiller shipped for the COCO pair retinanet_x101_r50 (detkds.md §10; genome file
# retinanet_x101_r50.json), trained on the demo retinanet pair. The genome's distances end in a mean,
# so the term values do not grow with channels or map size: the published weights are kept as they are.
_base_ = ['../../demo/_base_/distill_retinanet.py']

model = dict(distill_losses=[
    dict(name='searched', loss=dict(
        type='SearchedDistillLoss',
        # the same genome as retinanet_x101_r50.json (a test keeps them equal)
        genome=dict(terms=[
            dict(input='instance', transforms=['catt', 'scale_r1', 'norm_C'], distance='l1', weight=50),
        ]))),
])
