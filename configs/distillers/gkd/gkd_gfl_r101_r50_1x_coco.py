# GKD (WACV 2024), GFL R-101 ms 2x -> GFL R-50, 1x: released COCO config (beta 0.5, SGD 0.025, grad-clip 35).
_base_ = ['../_base_/gfl_r101_to_r50.py']

model = dict(distill_losses=[
    # alpha_gkd: no released value exists for the active CAM-weighted term; the product default is the
    # FGD alpha of the same family (methods.md §5.5). beta_gkd: the released beta, weight of the logged
    # cam_gap metric only.
    dict(name='gkd', levels='all', loss=dict(
        type='GKDLoss', student_channels=256, teacher_channels=256, temp=0.5, alpha_gkd=0.001,
        beta_gkd=0.5, gamma_gkd=0.0, lambda_gkd=0.0, cam_mode='both', score_thr=0.3, topk=10,
        split_terms=True)),
])
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.025, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
train_cfg = dict(max_epochs=12)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
