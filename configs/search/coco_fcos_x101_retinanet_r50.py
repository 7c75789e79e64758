# A DetKDS search on COCO for PKD's heterogeneous pair FCOS X-101-64x4d -> RetinaNet R-50, 1x (PKD: 40.3 AP from
# 36.5; teacher 42.6). Everything not set here is the annotated COCO search's (coco_retinanet_r101_r50.py): proxy
# task, plan, scheduler, resources.
_base_ = ['./coco_retinanet_r101_r50.py']

teacher = dict(
    config='configs/coco/fcos_x101-64x4d_fpn_gn-head_ms-640-800-2x_coco.py',
    checkpoint='checkpoints/fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco-ede514a8.pth',
)

# PKD's heterogeneous recipe: FPN levels paired by index, the student's map resized to the teacher's (pairs.md; both
# give P3-P7 here, so it changes nothing but states the recipe), and no inheriting (an FCOS head is no RetinaNet head).
proxy = dict(level_pairing='index', inherit_neck_head=False)

# Stage 1: the FPN maps (PKD's input) and the heads' per-position class probabilities (9 anchors reduced per
# position against FCOS's one point). `cross_head` is not offered (the heads differ).
search = dict(stage1_inputs=['global', 'logits'])

# PKD's published schedule for this pair: 1x = 12 epochs, steps at 8 and 11 (RetinaNet's lr 0.01).
full_training = dict(max_epochs=12, val_interval=12, param_scheduler=[
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
])

# PKD with the losses of its RetinaNet X-101 -> R-50 config (weight 10 on P3-P6, student map resized): no config of
# this pair is shipped. The other methods publish no heterogeneous one-stage pair.
baselines = dict(
    _delete_=True,   # the pair's own list, not merged with the RetinaNet R-101 pair's
    none=None,
    pkd='configs/distillers/pkd/pkd_retinanet_x101_r50_2x_coco.py',
)
