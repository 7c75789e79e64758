# The COCO pair Mask R-CNN Swin-S -> RetinaNet R-50 (configs/coco/pairs.py: mask_rcnn_swin_s_to_retinanet_r50) as a
# DetectionDistiller: the RetinaNet R-50 student setup of retinanet_x101_to_r50.py with the Swin teacher. A two-stage
# teacher has no RetinaNet head to give, so nothing is inherited; FPN levels are paired by index with the student map
# resized to the teacher's (teacher P2-P5 with student P3-P6), as PKD's heterogeneous configs do (pairs.md).
_base_ = ['./retinanet_x101_to_r50.py']

model = dict(
    teacher=dict(config='{{fileDirname}}/../../coco/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py',
                 checkpoint=('checkpoints/mask_rcnn_swin-s-p4-w7_fpn_fp16_ms-crop-3x_coco'
                             '_20210903_104808-b92c91f1.pth')),
    inherit_neck_head=False,
    level_pairing='index')
