# Wiring demo: the Faster R-CNN student distilled from its trained teacher with plain feature imitation (MSE on
# every FPN level) after inheriting the teacher's neck and head.
_base_ = ['./_base_/distill_faster_rcnn.py']

model = dict(distill_losses=[
    dict(name='fi', levels='all', loss=dict(type='FeatureImitationLoss', loss_weight=1.0)),
])
