# PKD's heterogeneous recipe for a COCO RetinaNet R-50 student (pairs.md), shared by the FCOS X-101 and the Mask
# R-CNN Swin-S teacher's search configs; everything else is the annotated COCO search's (coco_retinanet_r101_r50.py):
# proxy task, plan, scheduler, resources, the 2x schedule.
_base_ = ['../coco_retinanet_r101_r50.py']

# FPN levels paired by index, the student's map resized to the teacher's, and no inheriting (neither an FCOS head nor
# a two-stage detector is a RetinaNet head to copy).
proxy = dict(level_pairing='index', inherit_neck_head=False)

# Stage 1: the FPN maps (PKD's input) and the teacher's class probabilities for the student (a dense head's per
# position, anchors reduced; a two-stage teacher's RoI head on the student's boxes). `cross_head` is not offered (the
# heads differ), nor `localization` for a two-stage teacher (its dense boxes are RPN proposals).
search = dict(stage1_inputs=['global', 'logits'])

baselines = dict(_delete_=True, none=None)   # each pair names its own PKD config (not the R-101 pair's list)
