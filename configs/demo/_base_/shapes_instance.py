# The shapes data with its instance masks (distill_core/shapes.py writes an exact polygon per object): the
# detection data of shapes_detection.py (same images, boxes, schedule and runtime) loading the masks too, and
# evaluated for box and mask AP (pycocotools `bbox` and `segm`: `coco/bbox_mAP`, `coco/segm_mAP`, ...).
# A dataset generated before masks existed is refused with the command that regenerates it.
_base_ = ['./shapes_detection.py']

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale={{_base_.image_size}}, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale={{_base_.image_size}}, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
