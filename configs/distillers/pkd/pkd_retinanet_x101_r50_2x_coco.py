# PKD (NeurIPS 2022), RetinaNet X-101-64x4d -> R-50, 2x, loss_weight 10 per level (P7 not distilled).
# mmrazor distils neck levels 0-3 only; no inheriting strategy (methods.md §4.2).
_base_ = ['../_base_/retinanet_x101_to_r50.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='pkd', levels=[0, 1, 2, 3], loss=dict(type='PKDLoss', loss_weight=10, resize_stu=True)),
    ])
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
