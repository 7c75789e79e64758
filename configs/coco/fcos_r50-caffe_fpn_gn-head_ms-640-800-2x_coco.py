# FCOS R-50 (caffe) FPN GN-head multi-scale 2x student (COCO box AP 38.5 alone): MMDetection's config.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py'

# Student backbones start from ImageNet weights, read from a local file (nothing is downloaded at run time).
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50_caffe-788b5fa3.pth')))
