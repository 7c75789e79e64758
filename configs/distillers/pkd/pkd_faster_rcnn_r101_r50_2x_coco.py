# PKD (NeurIPS 2022), Faster R-CNN R-101 -> R-50, 2x, loss_weight 6 per level.
# mmrazor distils neck levels 0-3 only; no inheriting strategy (methods.md §4.2).
_base_ = ['../_base_/faster_rcnn_r101_to_r50.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='pkd', levels=[0, 1, 2, 3], loss=dict(type='PKDLoss', loss_weight=6, resize_stu=True)),
    ])
optim_wrapper = dict(clip_grad=None)
