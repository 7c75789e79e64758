# A DetKDS search on COCO for the Faster R-CNN R-101 -> R-50 pair (DetKDS: 41.0 AP from 38.4; teacher 39.8).
# Everything not set here is the annotated COCO search's (coco_retinanet_r101_r50.py): proxy task, plan, scheduler,
# resources, the 2x schedule.
_base_ = ['./coco_retinanet_r101_r50.py']

teacher = dict(
    config='configs/coco/faster-rcnn_r101_fpn_2x_coco.py',
    checkpoint='checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
)
student = dict(config='configs/coco/faster-rcnn_r50_fpn_2x_coco.py')

# Faster R-CNN's learning rate is twice RetinaNet's (0.02 for 16 images in MMDetection's and the methods' configs):
# 0.01 for the proxy's 8 images, 0.02 for the full schedule.
proxy = dict(optimizer=dict(lr=0.01))
full_training = dict(optimizer=dict(lr=0.02))

# Stage 1: the four inputs of the DetKDS release's genome for this pair (configs/distillers/detkds/faster_rcnn_r101_r50.json):
# FPN maps, their foreground/background split, instance RoIs, the teacher's RoI classification of the student's RoIs.
# Twice the inputs of the RetinaNet pair: 160 proxies at most. `cross_head` is not offered (an RPN has no towers).
search = dict(stage1_inputs=['global', 'fg_bg', 'instance', 'logits'])

# The published methods with a COCO config for this pair: FGD, PKD (40.3) and GKD (its losses; the method's own run
# is 1x). Global-Knowledge (40.6 published, configs/distillers/gkd_global) is left out: its prototypes come from a
# training hook (GlobalKDPrototypeHook) the proxy does not run, and it starts from a trained student, not ImageNet.
baselines = dict(
    _delete_=True,   # the pair's own list, not merged with the RetinaNet pair's
    none=None,
    fgd='configs/distillers/fgd/fgd_faster_rcnn_r101_r50_2x_coco.py',
    pkd='configs/distillers/pkd/pkd_faster_rcnn_r101_r50_2x_coco.py',
    gkd='configs/distillers/gkd/gkd_faster_rcnn_r101_r50_1x_coco.py',
)
