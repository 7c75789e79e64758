# A DetKDS search on COCO for the RetinaNet X-101-64x4d -> R-50 pair (DetKDS: 41.1 AP from 37.4; teacher 41.6, the
# mstrain-3x checkpoint DetKDS used). Everything not set here is the annotated COCO search's
# (coco_retinanet_r101_r50.py): proxy task, plan, scheduler, resources, the 2x schedule.
_base_ = ['./coco_retinanet_r101_r50.py']

teacher = dict(
    config='configs/coco/retinanet_x101-64x4d_fpn_ms-640-800-3x_coco.py',
    checkpoint='checkpoints/retinanet_x101_64x4d_fpn_mstrain_3x_coco_20210719_051838-022c2187.pth',
)

# Stage 1: `instance`, the only input of the DetKDS release's genome for this pair
# (configs/distillers/detkds/retinanet_x101_r50.json), and `global`, the input of MGD and PKD, both published on it.
search = dict(stage1_inputs=['global', 'instance'])

# The published methods with a COCO config for this pair: FGD, MGD (41.0) and PKD (40.8) (configs/distillers/<method>).
baselines = dict(
    _delete_=True,   # the pair's own list, not merged with the R-101 pair's
    none=None,
    fgd='configs/distillers/fgd/fgd_retinanet_x101_r50_2x_coco.py',
    mgd='configs/distillers/mgd/mgd_retinanet_x101_r50_2x_coco.py',
    pkd='configs/distillers/pkd/pkd_retinanet_x101_r50_2x_coco.py',
)
