# The Faster R-CNN search's answer (study quality_faster_rcnn, benchmarks/RESULTS.md; genome key
# 884f26d217b091e7..., rebuilt from its formula and checked against that key) as a distiller config: its terms on
# the demo Faster R-CNN pair, trained with the proxy's strategy it was searched with (the teacher's neck/head
# inherited, constant weight). A member of benchmarks/configs/rung150_faster_rcnn.py.
# global: context -> no -> channel_standardize | l2 x1; fg_bg: context -> no -> norm_N | sse x0.004; instance: mask -> scale_r1 -> norm_C | pearson x1; logits: no | l2 x1
_base_ = ['../../configs/demo/_base_/distill_faster_rcnn.py']

model = dict(distill_losses=[dict(name='searched', loss=dict(type='SearchedDistillLoss', genome=dict(terms=[
        dict(input='global', enabled=True, weight=1.0, distance=dict(name='l2', params={}),
             transforms=[dict(name='context', params={}), dict(name='no', params={}), dict(name='channel_standardize', params={})]),
        dict(input='fg_bg', enabled=True, weight=0.004, distance=dict(name='sse', params={}),
             transforms=[dict(name='context', params={}), dict(name='no', params={}), dict(name='norm_N', params={})]),
        dict(input='instance', enabled=True, weight=1.0, distance=dict(name='pearson', params={}),
             transforms=[dict(name='mask', params={}), dict(name='scale_r1', params={}), dict(name='norm_C', params={})]),
        dict(input='logits', enabled=True, weight=1.0, distance=dict(name='l2', params={}),
             transforms=[dict(name='no', params={})]),
])))])
