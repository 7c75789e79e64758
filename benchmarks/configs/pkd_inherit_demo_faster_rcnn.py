# PKD's loss on the demo Faster R-CNN pair with the teacher's neck/head inherited: the member the sessions 9-10
# baselines ran as "PKD" (every baseline then trained the proxy's strategy), which a final rung at the full
# schedule ranked first on 60 held-out training images (+0.019 over FGD) and the val split last of the three
# (0.5720 vs FGD 0.5810). A member of benchmarks/configs/rung150_faster_rcnn.py.
_base_ = ['../../configs/distillers/pkd/pkd_demo_faster_rcnn.py']

model = dict(inherit_neck_head=True)
