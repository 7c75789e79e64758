# A DetKDS search on COCO for PKD's heterogeneous pair FCOS X-101-64x4d -> RetinaNet R-50, 1x (PKD: 40.3 AP from
# 36.5; teacher 42.6): PKD's heterogeneous recipe (_base_/pkd_heterogeneous_retinanet_r50.py: index pairing, which
# changes nothing here as both give P3-P7, no inheriting; stage 1 on the FPN maps and the per-position class
# probabilities, 9 anchors reduced against FCOS's one point).
_base_ = ['./_base_/pkd_heterogeneous_retinanet_r50.py']

teacher = dict(
    config='configs/coco/fcos_x101-64x4d_fpn_gn-head_ms-640-800-2x_coco.py',
    checkpoint='checkpoints/fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco-ede514a8.pth',
)

# PKD's published schedule for this pair: 1x = 12 epochs, steps at 8 and 11 (RetinaNet's lr 0.01).
full_training = dict(max_epochs=12, val_interval=12, param_scheduler=[
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
])

# PKD with the losses of its RetinaNet X-101 -> R-50 config (weight 10 on P3-P6, student map resized): no config of
# this pair is shipped. The other methods publish no heterogeneous one-stage pair.
baselines = dict(pkd='configs/distillers/pkd/pkd_retinanet_x101_r50_2x_coco.py')
