# The DetKDS searched distiller shipped for the COCO pair retinanet_r101_r50 (detkds.md §10; genome file
# retinanet_r101_r50.json), trained on the demo retinanet pair. The genome's distances end in a mean,
# so the term values do not grow with channels or map size: the published weights are kept as they are.
_base_ = ['../../demo/_base_/distill_retinanet.py']

model = dict(distill_losses=[
    dict(name='searched', loss=dict(
        type='SearchedDistillLoss',
        # the same genome as retinanet_r101_r50.json (a test keeps them equal)
        genome=dict(terms=[
            dict(input='global', transforms=['catt', 'scale_r2', 'norm_N'], distance='l1', weight=6),
            dict(input='fg_bg', transforms=['no', 'local_s4', 'norm_HW'], distance='l1', weight=2),
        ]))),
])
