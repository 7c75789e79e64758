# A small DetKDS search on the demo Cascade R-CNN -> Faster R-CNN pair (shapes data): DetKDS's heterogeneous pair
# (Cascade Mask R-CNN X101 -> Faster R-CNN R50, +4.1 AP) in miniature. Everything not set here is the annotated
# demo search's (demo_retinanet.py): data, proxy task, evolution sizes, scheduler, resources, full training.
# Paths are relative to the folder `detkds-search launch` runs in (the repository root).
_base_ = ['./demo_retinanet.py']

teacher = dict(
    config='configs/demo/cascade_rcnn_teacher.py',
    checkpoint='work_dirs/demo/cascade_rcnn_teacher/final.pth',
    # demo only: train the teacher with `detkds-search train` when the checkpoint is missing
    train_if_missing=dict(work_dir='work_dirs/demo/cascade_rcnn_teacher'),
)
student = dict(config='configs/demo/faster_rcnn_student.py')

# The published pair does not inherit the teacher's neck and head (pairs.md); the cascade's per-stage RoI heads
# have no student counterpart anyway. Stage 2 still searches the strategy.
proxy = dict(inherit_neck_head=False)

# Stage 1 searches the features and the cascade's RoI classification of the student's RoIs (softmax of the mean
# of its three stages' logits, as MMDetection scores at test time) beside the RPN's objectness.
search = dict(stage1_inputs=['global', 'logits'])

# the published methods with a shipped demo config for a Faster R-CNN student
baselines = ['none', 'fgd', 'pkd']
