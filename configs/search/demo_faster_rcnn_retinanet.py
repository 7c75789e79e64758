# A small DetKDS search on a two-stage -> one-stage demo pair (shapes data): the Faster R-CNN teacher for the
# RetinaNet student, as PKD's Mask R-CNN -> RetinaNet pair in miniature. Everything not set here is the annotated
# demo search's (demo_retinanet.py): data, proxy task, evolution sizes, scheduler, resources, full training.
# Paths are relative to the folder `detkds-search launch` runs in (the repository root).
#
# FPN levels are paired by stride (the demo detectors share strides 4-64; a P2-P6 teacher for a P3-P7 student
# pairs P3-P6). The pair serves global, fg_bg and instance features, and `logits` as the teacher's RoI head
# classifying the student's most confident boxes; `localization` is not offered (the teacher's dense boxes are
# RPN proposals), nor `cross_head` (the heads differ): `launch` says so in one line.
_base_ = ['./demo_retinanet.py']

teacher = dict(
    config='configs/demo/faster_rcnn_teacher.py',
    checkpoint='work_dirs/demo/faster_rcnn_teacher/final.pth',
    # demo only: train the teacher with `detkds-search train` when the checkpoint is missing
    train_if_missing=dict(work_dir='work_dirs/demo/faster_rcnn_teacher'),
)
student = dict(config='configs/demo/retinanet_student.py')

# PKD's heterogeneous recipes do not inherit (pairs.md): a two-stage teacher has no RetinaNet head to copy.
proxy = dict(inherit_neck_head=False)

search = dict(stage1_inputs=['global', 'logits'])

baselines = ['none', 'fgd', 'mgd', 'pkd']
