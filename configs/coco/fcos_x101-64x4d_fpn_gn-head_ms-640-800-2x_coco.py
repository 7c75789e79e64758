# FCOS X-101-64x4d FPN GN-head multi-scale 2x teacher (COCO box AP 42.6): MMDetection's config. PKD's heterogeneous
# teacher for the RetinaNet R-50 student; pytorch-style input normalisation, as the RetinaNet student's.
_base_ = 'mmdet::fcos/fcos_x101-64x4d_fpn_gn-head_ms-640-800-2x_coco.py'

# A teacher loads its model-zoo checkpoint: its backbone must never fetch ImageNet weights.
model = dict(backbone=dict(init_cfg=None))
