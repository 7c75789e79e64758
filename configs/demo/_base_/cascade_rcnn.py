# Cascade R-CNN on the shapes data: the demo Faster R-CNN's backbone, neck and RPN (_base_/faster_rcnn.py) with
# MMDetection's CascadeRoIHead (3 stages, IoU thresholds 0.5 / 0.6 / 0.7, stage loss weights 1 / 0.5 / 0.25,
# box coder stds halved at each stage), its RoI extractor and sampler sizes scaled for 128 px images as the
# Faster R-CNN demo's. At test time a RoI's class score is the softmax of the mean of the 3 stages' logits.
_base_ = ['./faster_rcnn.py']


def _stage(stds):
    return dict(
        type='Shared2FCBBoxHead',
        in_channels=64,
        fc_out_channels=256,
        roi_feat_size=7,
        num_classes=3,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=stds),
        reg_class_agnostic=True,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


def _rcnn(iou):
    return dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=128, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
        pos_weight=-1,
        debug=False)


model = dict(
    type='CascadeRCNN',
    roi_head=dict(
        _delete_=True,
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=64,
            featmap_strides=[4, 8, 16, 32],
            finest_scale=16),
        bbox_head=[_stage([0.1, 0.1, 0.2, 0.2]), _stage([0.05, 0.05, 0.1, 0.1]),
                   _stage([0.033, 0.033, 0.067, 0.067])]),
    train_cfg=dict(rcnn=[_rcnn(0.5), _rcnn(0.6), _rcnn(0.7)]))
