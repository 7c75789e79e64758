# FGD on the demo faster_rcnn pair (tiny ResNet-18 detectors on the shapes data, 64-channel FPN from
# stride 4).
# Weights: the published Faster R-CNN values x 4. FGD's terms are sums over channels (fg/bg masks are normalised per
# box / per image, so the map size cancels): the demo FPN has 64 channels instead of 256, hence x 256/64.
_base_ = ['../../demo/_base_/distill_faster_rcnn.py']

model = dict(distill_losses=[
    dict(name='fgd', levels=[0, 1, 2, 3], loss=dict(
        type='FGDLoss', student_channels=64, teacher_channels=64, temp=0.5,
        alpha_fgd=0.0002, beta_fgd=0.0001, gamma_fgd=0.0002, lambda_fgd=2e-06, split_terms=True)),
])
