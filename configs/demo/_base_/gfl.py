# GFL on the shapes data: ResNet-18 (base 64) + FPN 64 from stride 4, 2 stacked GN head convs,
# ATSS assignment, quality focal + distribution focal losses.
# The demo GFL pair shares it: gfl_teacher.py trains it as is, gfl_student.py with a narrower
# backbone; each adds its own schedule.
_base_ = ['./resnet18_fpn.py']

model = dict(
    type='GFL',
    bbox_head=dict(
        type='GFLHead',
        num_classes=3,
        in_channels=64,
        stacked_convs=2,
        feat_channels=64,
        anchor_generator=dict(
            type='AnchorGenerator',
            ratios=[1.0],
            octave_base_scale=4,            # one square anchor of 4x the stride: 16 px ... 256 px
            scales_per_octave=1,
            strides=[4, 8, 16, 32, 64]),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
        reg_max=16,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        assigner=dict(type='ATSSAssigner', topk=9),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100))
