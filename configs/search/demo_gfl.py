# A small DetKDS search on the demo GFL pair (shapes data): DetKDS's GFL R101 -> R50 pair in miniature.
# Everything not set here is the annotated demo search's (demo_retinanet.py): data, proxy task, evolution sizes,
# scheduler, resources, full training.
# Paths are relative to the folder `detkds-search launch` runs in (the repository root).
_base_ = ['./demo_retinanet.py']

teacher = dict(
    config='configs/demo/gfl_teacher.py',
    checkpoint='work_dirs/demo/gfl_teacher/final.pth',
    # demo only: train the teacher with `detkds-search train` when the checkpoint is missing
    train_if_missing=dict(work_dir='work_dirs/demo/gfl_teacher'),
)
student = dict(config='configs/demo/gfl_student.py')

# Stage 1: `global`, the only input of the DetKDS release's GFL genome (configs/distillers/detkds/gfl_r101_r50.json),
# and `localization`: GFL's boxes are distributions, the space offers their KL for GFL on both sides, and the
# strongest published GFL distillers (CrossKD, BCKD; LD before them) act on the head's predictions, not the features.
search = dict(stage1_inputs=['global', 'localization'])

# The published methods with a shipped demo config for a GFL student (configs/distillers/<method>/<method>_demo_gfl.py):
# FGD, CrossKD, BCKD and GKD (its CAMs come from the distiller's own step, which the proxy runs).
baselines = ['none', 'fgd', 'crosskd', 'bckd', 'gkd']
