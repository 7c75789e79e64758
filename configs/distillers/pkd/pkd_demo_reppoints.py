# PKD on the demo reppoints pair. PKD is a mean over normalised maps, so it does not depend on C, H, W; the weight
# is 2 per level (published: 6-10), the value that worked in the project's calibration run (stack.md): a
# from-scratch tiny student is hurt by an imitation term that dominates its detection loss early on.
_base_ = ['../../demo/_base_/distill_reppoints.py']

model = dict(
    inherit_neck_head=False,
    distill_losses=[
        dict(name='pkd', levels=[0, 1, 2, 3], loss=dict(type='PKDLoss', loss_weight=2.0)),
    ])
