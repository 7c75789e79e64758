# PKD (NeurIPS 2022), Mask R-CNN Swin-S -> RetinaNet R-50, 2x (37.4 -> 41.5 AP): mmrazor's
# pkd_fpn_mask-rcnn_swin_retina_r50_2x_coco.py, loss_weight 6 on neck indices 0-3 (teacher P2-P5, student P3-P6
# resized to them), no inheriting (pairs.md).
_base_ = ['../_base_/mask_rcnn_swin_s_to_retinanet_r50.py']

model = dict(distill_losses=[
    dict(name='pkd', levels=[0, 1, 2, 3], loss=dict(type='PKDLoss', loss_weight=6, resize_stu=True)),
])
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
