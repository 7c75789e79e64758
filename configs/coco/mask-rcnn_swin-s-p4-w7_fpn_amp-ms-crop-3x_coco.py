# Mask R-CNN Swin-S (p4-w7) FPN, multi-scale crop 3x teacher (COCO box AP 48.2, mask AP 43.2): MMDetection's config.
# PKD's transformer teacher for the RetinaNet R-50 student (37.4 -> 41.5 AP).
_base_ = 'mmdet::swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py'

# A teacher loads its model-zoo checkpoint: its backbone must never fetch ImageNet weights.
model = dict(backbone=dict(init_cfg=None))
