# MGD (ECCV 2022), RetinaNet X-101-64x4d (ms 3x checkpoint) -> R-50, 2x: released values (methods.md §3.3).
_base_ = ['../_base_/retinanet_x101_to_r50.py']

model = dict(distill_losses=[
    dict(name='mgd', levels='all', loss=dict(
        type='MGDLoss', student_channels=256, teacher_channels=256, alpha_mgd=2e-05, lambda_mgd=0.65)),
])
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
