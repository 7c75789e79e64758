# A DetKDS search on COCO for the RepPoints X-101-DCN -> R-50 pair (DetKDS, MGD and PKD: 42.3 AP from 38.6; teacher
# 44.2). Everything not set here is the annotated COCO search's (coco_retinanet_r101_r50.py): proxy task, plan,
# scheduler, resources, the 2x schedule (lr 0.01, as RepPoints' and the methods' configs).
_base_ = ['./coco_retinanet_r101_r50.py']

teacher = dict(
    config='configs/coco/reppoints-moment_x101-dconv-c3-c5_fpn-gn_head-gn_2x_coco.py',
    checkpoint='checkpoints/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck+head_2x_coco_20200329-f87da1ea.pth',
)
student = dict(config='configs/coco/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py')

# Stage 1: `global`, the only input of the DetKDS release's genome for this pair
# (configs/distillers/detkds/reppoints_x101_r50.json), and `fg_bg`, FGD's (42.0). `cross_head` is not offered.
search = dict(stage1_inputs=['global', 'fg_bg'])

# The published methods with a COCO config for this pair: FGD, MGD and PKD.
baselines = dict(
    _delete_=True,   # the pair's own list, not merged with the RetinaNet pair's
    none=None,
    fgd='configs/distillers/fgd/fgd_reppoints_x101_r50_2x_coco.py',
    mgd='configs/distillers/mgd/mgd_reppoints_x101_r50_2x_coco.py',
    pkd='configs/distillers/pkd/pkd_reppoints_x101_r50_2x_coco.py',
)
