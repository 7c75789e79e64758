# A small DetKDS search on the demo FCOS pair (shapes data): DetKDS's FCOS R101 -> R50 pair in miniature.
# Everything not set here is the annotated demo search's (demo_retinanet.py): data, proxy task, evolution sizes,
# scheduler, resources, full training.
# Paths are relative to the folder `detkds-search launch` runs in (the repository root).
_base_ = ['./demo_retinanet.py']

teacher = dict(
    config='configs/demo/fcos_teacher.py',
    checkpoint='work_dirs/demo/fcos_teacher/final.pth',
    # demo only: train the teacher with `detkds-search train` when the checkpoint is missing
    train_if_missing=dict(work_dir='work_dirs/demo/fcos_teacher'),
)
student = dict(config='configs/demo/fcos_student.py')

# Stage 1 evolves the two inputs of the DetKDS release's FCOS genome (configs/distillers/detkds/fcos_r101_r50.json):
# the whole FPN maps and their foreground/background split.
search = dict(stage1_inputs=['global', 'fg_bg'])

# The published methods with a shipped demo config for an FCOS student: FGD and CrossKD
# (configs/distillers/<method>/<method>_demo_fcos.py). MGD, PKD, BCKD and GKD ship none for FCOS.
baselines = ['none', 'fgd', 'crosskd']
