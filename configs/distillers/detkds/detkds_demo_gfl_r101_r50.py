# The DetKDS searched distiller shipped for the COCO pair gfl_r101_r50 (detkds.md §10; genome file
# gfl_r101_r50.json), trained on the demo gfl pair. The genome's distances end in a mean,
# so the term values do not grow with channels or map size: the published weights are kept as they are.
_base_ = ['../../demo/_base_/distill_gfl.py']

model = dict(distill_losses=[
    dict(name='searched', loss=dict(
        type='SearchedDistillLoss',
        # the same genome as gfl_r101_r50.json (a test keeps them equal)
        genome=dict(terms=[
            dict(input='global', transforms=['catt', 'scale_r2', 'norm_N'], distance='l1', weight=10),
        ]))),
])
