# GKD (gradient-guided, CAM-weighted imitation) on the demo gfl pair. alpha_gkd: the published FGD alpha of
# the family x 4 (channel ratio 256/64, as the FGD demo configs); beta_gkd weights only the logged metric.
_base_ = ['../../demo/_base_/distill_gfl.py']

model = dict(distill_losses=[
    dict(name='gkd', levels='all', loss=dict(
        type='GKDLoss', student_channels=64, teacher_channels=64, alpha_gkd=0.004, beta_gkd=0.5,
        cam_mode='both', score_thr=0.3, topk=10, split_terms=True)),
])
