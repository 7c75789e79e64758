# RetinaNet X-101-64x4d FPN multi-scale 3x teacher (COCO box AP 41.6; the checkpoint DetKDS used for this pair).
_base_ = 'mmdet::retinanet/retinanet_x101-64x4d_fpn_ms-640-800-3x_coco.py'

# A teacher loads its model-zoo checkpoint: its backbone must never fetch ImageNet weights.
model = dict(backbone=dict(init_cfg=None))
