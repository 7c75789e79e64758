# A DetKDS search on COCO for the heterogeneous pair Cascade Mask R-CNN X-101-32x4d-DCN -> Faster R-CNN R-50 (DetKDS's
# largest gain: 42.5 AP from 38.4; teacher box AP 47.3). The Faster R-CNN pair's settings (coco_faster_rcnn_r101_r50.py:
# learning rates, baselines) on the annotated COCO search's proxy, plan and 2x schedule (coco_retinanet_r101_r50.py).
_base_ = ['./coco_faster_rcnn_r101_r50.py']

teacher = dict(
    config='configs/coco/cascade-mask-rcnn_x101-32x4d-dconv-c3-c5_fpn_1x_coco.py',
    checkpoint='checkpoints/cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth',
)

# The published heterogeneous recipes do not inherit the teacher's neck and head (pairs.md): the cascade's per-stage
# RoI heads have no student counterpart, and without the teacher's head the proxy AP starts lower: check its ranking
# with `detkds-search fidelity` first. Both FPNs give P2-P6 (strides 4-64): stride pairing matches every level.
proxy = dict(inherit_neck_head=False)

# Stage 1: the FPN maps (MGD, 42.1 here), their foreground/background split (FGD, 42.0) and the cascade's RoI
# classification of the student's RoIs (softmax of the mean of its three stages' logits, as MMDetection scores at test
# time; never used by the DetKDS release). The teacher's mask head has no student counterpart (`mask` is dropped).
search = dict(stage1_inputs=['global', 'fg_bg', 'logits'])

# No method config for this teacher is shipped: FGD and PKD run with the losses of their Faster R-CNN R-101 -> R-50
# configs (the same 256-channel P2-P5 levels on both sides, the methods' released Faster R-CNN weights), as the demo
# cascade search does. GKD is left out: its CAMs back-propagate the teacher's own detections, untested on a cascade.
baselines = dict(
    _delete_=True,   # the pair's own list, not merged with the Faster R-CNN pair's
    none=None,
    fgd='configs/distillers/fgd/fgd_faster_rcnn_r101_r50_2x_coco.py',
    pkd='configs/distillers/pkd/pkd_faster_rcnn_r101_r50_2x_coco.py',
)
