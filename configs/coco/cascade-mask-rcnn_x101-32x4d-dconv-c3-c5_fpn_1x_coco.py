# Cascade Mask R-CNN X-101-32x4d DCN(c3-c5) FPN 1x teacher (COCO box AP 47.3, mask AP 41.1): MMDetection's config.
# DetKDS's heterogeneous teacher for the Faster R-CNN R-50 student (and FGD's and MGD's).
_base_ = 'mmdet::dcn/cascade-mask-rcnn_x101-32x4d-dconv-c3-c5_fpn_1x_coco.py'

# A teacher loads its model-zoo checkpoint: its backbone must never fetch ImageNet weights.
model = dict(backbone=dict(init_cfg=None))
