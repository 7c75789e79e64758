# The Global-Knowledge student starts from a fully trained student (Faster R-CNN R-50 2x, 38.4 AP) rather
# than from ImageNet + the teacher's neck/head: the whole detector is loaded after initialisation.
_base_ = ['../../coco/faster-rcnn_r50_fpn_2x_coco.py']

model = dict(init_cfg=dict(
    type='Pretrained',
    checkpoint='checkpoints/faster_rcnn_r50_fpn_2x_coco_bbox_mAP-0.384_20200504_210434-a5d8aa15.pth'))
