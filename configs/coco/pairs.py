# The published COCO teacher -> student pairs (DetKDS, ICML 2024; and PKD's heterogeneous FCOS -> RetinaNet and
# Mask R-CNN Swin-S -> RetinaNet), one entry per pair.
# Nothing is downloaded at run time: place the files below in checkpoints/ (repository root) first.
#   teacher_checkpoint:  the teacher's MMDetection model-zoo weights (file names as in mmdet's metafiles)
#   student_pretrained:  the ImageNet backbone the student config initialises from
# box AP values are MMDetection model-zoo COCO val2017 numbers (the student's is its baseline without KD).
pairs = dict(
    retinanet_r101_to_r50=dict(
        teacher='configs/coco/retinanet_r101_fpn_2x_coco.py',
        student='configs/coco/retinanet_r50_fpn_2x_coco.py',
        teacher_checkpoint='checkpoints/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
        student_pretrained='checkpoints/resnet50-0676ba61.pth',
        teacher_box_ap=38.9,
        student_box_ap=37.4),
    retinanet_x101_to_r50=dict(
        teacher='configs/coco/retinanet_x101-64x4d_fpn_ms-640-800-3x_coco.py',
        student='configs/coco/retinanet_r50_fpn_2x_coco.py',
        teacher_checkpoint='checkpoints/retinanet_x101_64x4d_fpn_mstrain_3x_coco_20210719_051838-022c2187.pth',
        student_pretrained='checkpoints/resnet50-0676ba61.pth',
        teacher_box_ap=41.6,
        student_box_ap=37.4),
    faster_rcnn_r101_to_r50=dict(
        teacher='configs/coco/faster-rcnn_r101_fpn_2x_coco.py',
        student='configs/coco/faster-rcnn_r50_fpn_2x_coco.py',
        teacher_checkpoint='checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
        student_pretrained='checkpoints/resnet50-0676ba61.pth',
        teacher_box_ap=39.8,
        student_box_ap=38.4),
    fcos_r101_to_r50=dict(
        teacher='configs/coco/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
        student='configs/coco/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
        teacher_checkpoint='checkpoints/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth',
        student_pretrained='checkpoints/resnet50_caffe-788b5fa3.pth',
        teacher_box_ap=40.8,
        student_box_ap=38.5),
    gfl_r101_to_r50=dict(
        teacher='configs/coco/gfl_r101_fpn_ms-2x_coco.py',
        student='configs/coco/gfl_r50_fpn_1x_coco.py',
        teacher_checkpoint='checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth',
        student_pretrained='checkpoints/resnet50-0676ba61.pth',
        teacher_box_ap=44.7,
        student_box_ap=40.2),
    reppoints_x101_to_r50=dict(
        teacher='configs/coco/reppoints-moment_x101-dconv-c3-c5_fpn-gn_head-gn_2x_coco.py',
        student='configs/coco/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py',
        teacher_checkpoint=('checkpoints/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck+head_2x_coco'
                            '_20200329-f87da1ea.pth'),
        student_pretrained='checkpoints/resnet50-0676ba61.pth',
        teacher_box_ap=44.2,
        student_box_ap=38.6),
    cascade_mask_rcnn_x101_to_faster_rcnn_r50=dict(
        teacher='configs/coco/cascade-mask-rcnn_x101-32x4d-dconv-c3-c5_fpn_1x_coco.py',
        student='configs/coco/faster-rcnn_r50_fpn_2x_coco.py',
        teacher_checkpoint='checkpoints/cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth',
        student_pretrained='checkpoints/resnet50-0676ba61.pth',
        teacher_box_ap=47.3,
        student_box_ap=38.4),
    fcos_x101_to_retinanet_r50=dict(
        teacher='configs/coco/fcos_x101-64x4d_fpn_gn-head_ms-640-800-2x_coco.py',
        student='configs/coco/retinanet_r50_fpn_2x_coco.py',
        teacher_checkpoint=('checkpoints/fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco'
                            '-ede514a8.pth'),
        student_pretrained='checkpoints/resnet50-0676ba61.pth',
        teacher_box_ap=42.6,
        student_box_ap=37.4),
    mask_rcnn_swin_s_to_retinanet_r50=dict(
        teacher='configs/coco/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py',
        student='configs/coco/retinanet_r50_fpn_2x_coco.py',
        teacher_checkpoint=('checkpoints/mask_rcnn_swin-s-p4-w7_fpn_fp16_ms-crop-3x_coco'
                            '_20210903_104808-b92c91f1.pth'),
        student_pretrained='checkpoints/resnet50-0676ba61.pth',
        teacher_box_ap=48.2,
        student_box_ap=37.4),
)
