# RetinaNet R-101 FPN 2x teacher (COCO box AP 38.9): MMDetection's config.
_base_ = 'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'

# A teacher loads its model-zoo checkpoint: its backbone must never fetch ImageNet weights.
model = dict(backbone=dict(init_cfg=None))
