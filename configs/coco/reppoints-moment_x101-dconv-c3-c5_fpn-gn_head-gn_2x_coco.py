# RepPoints (moment) X-101-32x4d DCN(c3-c5) FPN GN-neck+head 2x teacher (COCO box AP 44.2): MMDetection's config.
_base_ = 'mmdet::reppoints/reppoints-moment_x101-dconv-c3-c5_fpn-gn_head-gn_2x_coco.py'

# A teacher loads its model-zoo checkpoint: its backbone must never fetch ImageNet weights.
model = dict(backbone=dict(init_cfg=None))
