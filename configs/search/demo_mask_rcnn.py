# A small DetKDS search on the demo Mask R-CNN pair (shapes data with instance masks). Everything not set here is
# the annotated demo search's (demo_retinanet.py): proxy task, evolution sizes, scheduler, resources, full
# training. From a fresh clone it generates the data (or adds the instance masks to a dataset generated before they
# existed: same images and boxes), pretrains the demo backbones and trains the tiny Mask R-CNN teacher once (all
# cached on disk).
# Paths are relative to the folder `detkds-search launch` runs in (the repository root).
_base_ = ['./demo_retinanet.py']

teacher = dict(
    config='configs/demo/mask_rcnn_teacher.py',
    checkpoint='work_dirs/demo/mask_rcnn_teacher/final.pth',
    # demo only: train the teacher with `detkds-search train` when the checkpoint is missing
    train_if_missing=dict(work_dir='work_dirs/demo/mask_rcnn_teacher'),
)
student = dict(config='configs/demo/mask_rcnn_student.py')

# The demo proxy (its 40 iterations were chosen on the RetinaNet pair by `detkds-search fidelity`, not re-measured
# for this pair). metric='segm': the fitness is the mask AP of the held-out training images, since instance
# segmentation is what a Mask R-CNN student is for and the `mask` input acts on it first; the box AP is reported
# beside it (bbox_AP, ...) in every trial. metric='bbox' ranks by box AP instead (segm_AP beside it).
proxy = dict(metric='segm')

# Stage 1 searches the FPN features and the mask-head response (offered only to mask-head families).
search = dict(stage1_inputs=['global', 'mask'])

# The bar: the student alone, and the published feature distillers with their demo Faster R-CNN losses (the Mask
# R-CNN pair has the same 64-channel FPN and two-stage structure: FGD's fg/bg masks come from the boxes, PKD needs
# none; their demo weights were set for it). No published method has a mask-specific term to run.
baselines = dict(_delete_=True,   # the base's list of names is replaced, not merged
                 none=None, fgd='configs/distillers/fgd/fgd_demo_faster_rcnn.py',
                 pkd='configs/distillers/pkd/pkd_demo_faster_rcnn.py')
