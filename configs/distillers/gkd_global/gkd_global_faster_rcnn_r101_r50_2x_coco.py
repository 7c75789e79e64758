# Global-Knowledge distillation (ECCV 2022), Faster R-CNN R-101 2x -> R-50 (from a trained R-50), 24 epochs:
# the released config (methods.md §6): robust point-wise fg/bg imitation (kd_param fg 1, bg 4) on the 5
# FPN levels through 3x3 adaptation convs, boxes = the student's positive RoIs, robust soft-label KL on the
# same RoIs (T = 2), prototypes (10 per class and level, <= 800 images per class, boxes > 30 px) regenerated
# before every epoch, point losses attenuated by 1 - epoch / 24. SGD 0.02, no gradient clipping.
_base_ = ['../_base_/faster_rcnn_r101_to_r50.py']

model = dict(
    student=dict(config='{{fileDirname}}/faster_rcnn_r50_trained_student.py'),
    inherit_neck_head=False,
    distill_losses=[
        dict(name='gkd_point', levels='all', loss=dict(
            type='GlobalKDLoss', student_channels=256, teacher_channels=256, num_classes=80, num_prototypes=10,
            fg_weight=1.0, bg_weight=4.0, loss_weight=1.0, num_levels=5, canonical_scale=56,
            kd_boxes='proposals', use_robust_weights=True, kd_attenuation=True, split_terms=True)),
        dict(name='gkd_soft', loss=dict(
            type='GlobalKDSoftLabelLoss', student_channels=256, teacher_channels=256, num_classes=80,
            num_prototypes=10, num_levels=5, temperature=2.0, loss_weight=1.0)),
    ])
custom_hooks = [
    dict(type='GlobalKDPrototypeHook', max_images_per_class=800, min_size=(30, 30), seed=1, batch_size=8,
         num_prototypes=10),
]
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001), clip_grad=None)
