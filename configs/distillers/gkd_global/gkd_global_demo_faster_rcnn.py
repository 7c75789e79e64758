# Global-Knowledge distillation on the demo faster_rcnn pair. The point and soft-label losses are normalised
# by their mask sums / RoI counts, so the published weights (fg 1, bg 4, soft 1) are kept. Rescaled for 128 px images
# with 8-56 px objects: canonical_scale 16 (boxes of 16-32 px -> level 1, ...) instead of 56, prototypes from
# boxes > 8 px, at most 100 images per class, regenerated every 150 of the 600 iterations. Unlike the
# reference (a fully trained student), the demo student starts from scratch, as in the other demo configs.
_base_ = ['../../demo/_base_/distill_faster_rcnn.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='gkd_point', levels='all', loss=dict(
            type='GlobalKDLoss', student_channels=64, teacher_channels=64, num_classes=3, canonical_scale=16,
            kd_boxes='proposals', split_terms=True)),
        dict(name='gkd_soft', loss=dict(
            type='GlobalKDSoftLabelLoss', student_channels=64, teacher_channels=64, num_classes=3)),
    ])
custom_hooks = [
    dict(type='GlobalKDPrototypeHook', interval=150, max_images_per_class=100, min_size=(8, 8), batch_size=8),
]
