# FGD on the demo reppoints pair (tiny ResNet-18 detectors on the shapes data, 64-channel FPN from stride 4).
# Weights: the published RepPoints values x 4. FGD's terms are sums over channels (fg/bg masks are normalised per
# box / per image, so the map size cancels): the demo FPN has 64 channels instead of 256, hence x 256/64.
_base_ = ['../../demo/_base_/distill_reppoints.py']

model = dict(distill_losses=[
    dict(name='fgd', levels='all', loss=dict(
        type='FGDLoss', student_channels=64, teacher_channels=64, temp=0.5,
        alpha_fgd=0.0064, beta_fgd=0.0032, gamma_fgd=0.0032, lambda_fgd=3.2e-05, split_terms=True)),
])
