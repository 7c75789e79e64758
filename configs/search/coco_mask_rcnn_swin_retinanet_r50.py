# A DetKDS search on COCO for PKD's transformer-teacher pair Mask R-CNN Swin-S -> RetinaNet R-50, 2x (PKD: 41.5 AP
# from 37.4; teacher 48.2): PKD's heterogeneous recipe (_base_/pkd_heterogeneous_retinanet_r50.py: teacher P2-P5
# paired by index with student P3-P6 resized to them, a one-level stride offset (pairs.md); no inheriting; stage 1 on
# the FPN maps and the teacher's RoI head classifying the student's boxes) on the base's 2x schedule, PKD's here.
_base_ = ['./_base_/pkd_heterogeneous_retinanet_r50.py']

teacher = dict(
    config='configs/coco/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py',
    checkpoint='checkpoints/mask_rcnn_swin-s-p4-w7_fpn_fp16_ms-crop-3x_coco_20210903_104808-b92c91f1.pth',
)

baselines = dict(pkd='configs/distillers/pkd/pkd_mask_rcnn_swin_retinanet_r50_2x_coco.py')
