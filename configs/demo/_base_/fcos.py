# FCOS on the shapes data (the centre-sampling / norm-bbox / centerness-on-reg / GIoU recipe):
# ResNet-18 (base 64) + FPN 64 from stride 4, 2 stacked GN head convs.
# The demo FCOS pair shares it: fcos_teacher.py trains it as is, fcos_student.py with a narrower
# backbone; each adds its own schedule.
_base_ = ['./resnet18_fpn.py']

model = dict(
    type='FCOS',
    neck=dict(relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead',
        num_classes=3,
        in_channels=64,
        stacked_convs=2,
        feat_channels=64,
        strides=[4, 8, 16, 32, 64],
        # largest point-to-side distance per level, 4x the stride (COCO's config uses 8x with strides 8-128)
        regress_ranges=((-1, 16), (16, 32), (32, 64), (64, 128), (128, 1e8)),
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        center_sample_radius=1.5,
        conv_bias=True,
        dcn_on_last_conv=False,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100))
