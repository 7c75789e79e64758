# RepPoints (moment) R-50 FPN GN-neck+head 2x student (COCO box AP 38.6 alone): MMDetection's config.
_base_ = 'mmdet::reppoints/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py'

# Student backbones start from ImageNet weights, read from a local file (nothing is downloaded at run time).
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50-0676ba61.pth')))
