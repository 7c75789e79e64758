# A DetKDS search on COCO for the GFL R-101 (ms 2x) -> R-50 pair (DetKDS: 43.7 AP; the student's 1x baseline 40.2;
# teacher 44.7). Everything not set here is the annotated COCO search's (coco_retinanet_r101_r50.py): proxy task,
# plan, scheduler, resources, the 24-epoch schedule.
_base_ = ['./coco_retinanet_r101_r50.py']

teacher = dict(
    config='configs/coco/gfl_r101_fpn_ms-2x_coco.py',
    checkpoint='checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth',
)
student = dict(config='configs/coco/gfl_r50_fpn_1x_coco.py')

# Stage 1: `global`, the only input of the DetKDS release's genome for this pair (configs/distillers/detkds/gfl_r101_r50.json),
# and `localization`: GFL's boxes are distributions (the space offers their KL), and the strongest published GFL
# distillers (CrossKD 43.7, BCKD 43.2, both 1x) act on the head's predictions.
search = dict(stage1_inputs=['global', 'localization'])

# Full training: DetKDS's 24 epochs (steps 16, 22) on the 1x student config. DetKDS trained the student multi-scale
# (mmdet's GFL-R50 ms-2x alone gives 42.9; anchors.md): this config's single-scale pipeline is the 1x baseline's.
# The methods below published 1x (12 epochs): compare them with full_training at max_epochs=12, milestones [8, 11].

# The published methods with a COCO config for this pair: FGD (43.5), CrossKD, BCKD and GKD (its losses).
baselines = dict(
    _delete_=True,   # the pair's own list, not merged with the RetinaNet pair's
    none=None,
    fgd='configs/distillers/fgd/fgd_gfl_r101_r50_coco.py',
    crosskd='configs/distillers/crosskd/crosskd_gfl_r101_r50_1x_coco.py',
    bckd='configs/distillers/bckd/bckd_gfl_r101_r50_1x_coco.py',
    gkd='configs/distillers/gkd/gkd_gfl_r101_r50_1x_coco.py',
)
