# A DetKDS search on COCO for the FCOS R-101 -> R-50 pair (caffe backbones, multi-scale 2x; DetKDS: 42.5 AP from 38.5;
# teacher 40.8). Everything not set here is the annotated COCO search's (coco_retinanet_r101_r50.py): proxy task, plan,
# scheduler, resources.
_base_ = ['./coco_retinanet_r101_r50.py']

teacher = dict(
    config='configs/coco/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
    checkpoint='checkpoints/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth',
)
student = dict(config='configs/coco/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py')

# Stage 1: the two inputs of the DetKDS release's genome for this pair (configs/distillers/detkds/fcos_r101_r50.json).
search = dict(stage1_inputs=['global', 'fg_bg'])

# FCOS's own 2x: lr 0.01 (its bias parameters keep the config's 2x lr and no decay), a constant 1/3 warm-up for 500
# iterations, steps at 16 and 22. (DetKDS's student recipe adds center sampling, norm-bbox and GIoU: anchors.md.)
full_training = dict(param_scheduler=[
    dict(type='ConstantLR', factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.1),
])

# The published methods with a COCO config for this pair: FGD (42.7) and CrossKD (41.1).
baselines = dict(
    _delete_=True,   # the pair's own list, not merged with the RetinaNet pair's
    none=None,
    fgd='configs/distillers/fgd/fgd_fcos_r101_r50_2x_coco.py',
    crosskd='configs/distillers/crosskd/crosskd_fcos_r101_r50_2x_coco.py',
)
