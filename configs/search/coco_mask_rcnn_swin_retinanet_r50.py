# A DetKDS search on COCO for PKD's transformer-teacher pair Mask R-CNN Swin-S -> RetinaNet R-50, 2x (PKD: 41.5 AP
# from 37.4; teacher 48.2). Everything not set here is the annotated COCO search's (coco_retinanet_r101_r50.py):
# proxy task, plan, scheduler, resources, and its 2x schedule (24 epochs, steps at 16 and 22), which is PKD's here.
_base_ = ['./coco_retinanet_r101_r50.py']

teacher = dict(
    config='configs/coco/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py',
    checkpoint='checkpoints/mask_rcnn_swin-s-p4-w7_fpn_fp16_ms-crop-3x_coco_20210903_104808-b92c91f1.pth',
)

# PKD's heterogeneous recipe: FPN levels paired by index, the student's map resized to the teacher's (teacher P2-P5
# with student P3-P6: a one-level stride offset, pairs.md), and no inheriting (a two-stage teacher has no RetinaNet
# head).
proxy = dict(level_pairing='index', inherit_neck_head=False)

# Stage 1: the FPN maps (PKD's input) and the teacher's RoI head classifying the student's most confident boxes.
# `localization` (RPN proposals are no detections), `cross_head` (the heads differ) and `mask` (a RetinaNet student
# has no mask head) are not offered.
search = dict(stage1_inputs=['global', 'logits'])

baselines = dict(
    _delete_=True,   # the pair's own list, not merged with the RetinaNet R-101 pair's
    none=None,
    pkd='configs/distillers/pkd/pkd_mask_rcnn_swin_retinanet_r50_2x_coco.py',
)
