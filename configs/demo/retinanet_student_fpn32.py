# RetinaNet student with a narrower FPN (32 channels) and head: its features no longer match the teacher's
# 64 channels, which exercises the distiller's per-level 1x1 channel adapter (and shape-filtered inheriting).
_base_ = ['./retinanet_student.py']

model = dict(
    neck=dict(out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32))
