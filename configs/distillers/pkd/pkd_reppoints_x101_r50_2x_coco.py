# PKD (NeurIPS 2022), RepPoints X-101-DCN -> R-50, 2x, loss_weight 10 per level.
# mmrazor distils neck levels 0-3 only; no inheriting strategy (methods.md §4.2).
_base_ = ['../../../configs/coco/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py']

model = dict(
    _delete_=True,      # the student's detector keys must not merge into the distiller
    type='DetectionDistiller',
    teacher=dict(config='configs/coco/reppoints-moment_x101-dconv-c3-c5_fpn-gn_head-gn_2x_coco.py',
                 checkpoint=('checkpoints/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck+head_2x_coco'
                             '_20200329-f87da1ea.pth')),
    student=dict(config='configs/coco/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py'),
    inherit_neck_head=False,
    distill_losses=[
        dict(name='pkd', levels=[0, 1, 2, 3], loss=dict(type='PKDLoss', loss_weight=10, resize_stu=True)),
    ])
find_unused_parameters = True
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
