# A small DetKDS search on the demo RepPoints pair (shapes data): DetKDS's RepPoints X101-DCN -> R50 pair in
# miniature. Everything not set here is the annotated demo search's (demo_retinanet.py): data, proxy task,
# evolution sizes, scheduler, resources, full training.
# Paths are relative to the folder `detkds-search launch` runs in (the repository root).
_base_ = ['./demo_retinanet.py']

teacher = dict(
    config='configs/demo/reppoints_teacher.py',
    checkpoint='work_dirs/demo/reppoints_teacher/final.pth',
    # demo only: train the teacher with `detkds-search train` when the checkpoint is missing
    train_if_missing=dict(work_dir='work_dirs/demo/reppoints_teacher'),
)
student = dict(config='configs/demo/reppoints_student.py')

# Stage 1: `global`, the only input of the DetKDS release's RepPoints genome
# (configs/distillers/detkds/reppoints_x101_r50.json), and `fg_bg`, the input of FGD's published RepPoints recipe
# (42.0 AP, close to DetKDS's 42.3): two inputs, as the RetinaNet demo. `cross_head` is not offered (RepPoints'
# deformable predictors have no defined crossed path).
search = dict(stage1_inputs=['global', 'fg_bg'])

# The published methods with a shipped demo config for a RepPoints student
# (configs/distillers/<method>/<method>_demo_reppoints.py): FGD, MGD and PKD, all three published on this pair.
baselines = ['none', 'fgd', 'mgd', 'pkd']
