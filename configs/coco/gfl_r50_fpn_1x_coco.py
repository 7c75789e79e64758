# GFL R-50 FPN 1x student (COCO box AP 40.2 alone): MMDetection's config.
_base_ = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'

# Student backbones start from ImageNet weights, read from a local file (nothing is downloaded at run time).
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50-0676ba61.pth')))
