# RetinaNet R-50 FPN 2x student (COCO box AP 37.4 alone): MMDetection's config.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py'

# Student backbones start from ImageNet weights, read from a local file (nothing is downloaded at run time).
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50-0676ba61.pth')))
