# GFL R-101 FPN multi-scale 2x teacher (COCO box AP 44.7): MMDetection's config.
_base_ = 'mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py'

# A teacher loads its model-zoo checkpoint: its backbone must never fetch ImageNet weights.
model = dict(backbone=dict(init_cfg=None))
