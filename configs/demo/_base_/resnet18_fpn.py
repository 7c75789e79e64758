# The backbone and neck every demo detector shares: ResNet-18 (pretrained, below) and an FPN from stride 4
# (outputs at strides 4, 8, 16, 32, 64 for the 8-124 px objects of 128 px images). This is the teacher width (base_channels=64); students shrink the
# backbone and keep FPN out_channels=64, so teacher and student neck/head tensors have equal shapes.
model = dict(
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=64,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        # Pretrained on the shapes training images (object/background crop classification,
        # workers/backbone_pretrain.py), the demo's stand-in for ImageNet weights: nothing can be downloaded.
        # The search's preparation makes it once (`data.pretrain_backbones`), or `detkds-search pretrain-backbone`;
        # DETKDS_DEMO_BACKBONES moves the folder (relative paths: to the folder the command runs in).
        init_cfg=dict(type='PretrainedBackbone',
                      checkpoint='{{$DETKDS_DEMO_BACKBONES:work_dirs/demo/backbones}}/resnet18_w64.pth')),
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 256, 512],   # base_channels * (1, 2, 4, 8) for ResNet-18's BasicBlock
        out_channels=64,
        start_level=0,
        # the extra stride-64 level comes from P5, not from the backbone: then only the lateral 1x1 convs
        # depend on the backbone width and every other neck tensor is shared-shape with the teacher
        add_extra_convs='on_output',
        num_outs=5))
