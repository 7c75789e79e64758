# FCOS R-101 (caffe) FPN GN-head multi-scale 2x teacher (COCO box AP 40.8): MMDetection's config.
_base_ = 'mmdet::fcos/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py'

# A teacher loads its model-zoo checkpoint: its backbone must never fetch ImageNet weights.
model = dict(backbone=dict(init_cfg=None))
