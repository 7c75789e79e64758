# Faster R-CNN R-101 FPN 2x teacher (COCO box AP 39.8): MMDetection's config.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py'

# A teacher loads its model-zoo checkpoint: its backbone must never fetch ImageNet weights.
model = dict(backbone=dict(init_cfg=None))
