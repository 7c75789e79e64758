# Mask R-CNN on the shapes data: the demo Faster R-CNN (_base_/faster_rcnn.py: ResNet-18 base 64 + FPN 64, RPN on
# strides 4-64, RoIs from strides 4-32) plus MMDetection's FCN mask head on 14x14 RoIAlign features giving
# N_pos x 3 x 28 x 28 mask logits. The head is narrowed for 2 CPU cores (2 convs of 64 channels instead of
# COCO's 4 of 256): the shapes' outlines are simple. The demo Mask R-CNN pair shares it: mask_rcnn_teacher.py
# trains it as is, mask_rcnn_student.py with a narrower backbone; both read the instance masks of
# _base_/shapes_instance.py.
_base_ = ['./faster_rcnn.py']

model = dict(
    type='MaskRCNN',
    roi_head=dict(
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=64,
            featmap_strides=[4, 8, 16, 32],
            finest_scale=16),                 # the box head's level rule (_base_/faster_rcnn.py)
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=2,
            in_channels=64,
            conv_out_channels=64,
            num_classes=3,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(rcnn=dict(mask_size=28)),
    test_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))
