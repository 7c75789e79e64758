# MGD on the demo retinanet pair. alpha_mgd: the published RetinaNet value x 64: MGD sums over C*H*W and the demo's
# finest level has 64 channels x 32x32 cells, about 1/64 of COCO's 256 x ~100x168 (x4 channels, x16 cells).
_base_ = ['../../demo/_base_/distill_retinanet.py']

model = dict(distill_losses=[
    dict(name='mgd', levels='all', loss=dict(
        type='MGDLoss', student_channels=64, teacher_channels=64, alpha_mgd=0.0013, lambda_mgd=0.65)),
])
