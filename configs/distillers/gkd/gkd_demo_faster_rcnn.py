# GKD (gradient-guided, CAM-weighted imitation) on the demo faster_rcnn pair. alpha_gkd: the published FGD
# alpha of the family x 4 (channel ratio 256/64, as the FGD demo configs); beta_gkd weights only the logged metric.
_base_ = ['../../demo/_base_/distill_faster_rcnn.py']

model = dict(distill_losses=[
    dict(name='gkd', levels=[0, 1, 2, 3], loss=dict(
        type='GKDLoss', student_channels=64, teacher_channels=64, alpha_gkd=0.0002, beta_gkd=0.01,
        cam_mode='both', score_thr=0.3, topk=10, split_terms=True)),
])
