# Issue 15, session 11: can a final rung decide the Faster R-CNN pair's top distillers when its fitness set is
# larger? Session 10's full-schedule rung scored on 60 held-out training images put PKD's loss with inheritance
# +0.019 above FGD, while the val split (150 images) put it 0.009 below: the seed std of a rung leaves out the
# sampling error of a fixed 60-image set. Here the same full-schedule recipe (600 iterations, x0.1 at 75 %,
# batch 8) trains on 450 training images and scores on the other 150, on the decision seeds 0-2, for the three
# members whose full-schedule val AP is known (benchmarks/results/search_quality_faster_rcnn*.json): FGD 0.5810,
# PKD's loss with inheritance 0.5720, the search's answer 0.5720. Fixed before any of its results:
#   detkds-search baselines benchmarks/configs/rung150_faster_rcnn.py --study rung150_faster_rcnn
_base_ = ['../../configs/search/quality_faster_rcnn.py']

proxy = dict(train_images=450, val_images=150, iterations=600, lr_steps=[0.75], eval_interval=None)

baselines = dict(_delete_=True, fgd=None,
                 pkd_inherit='benchmarks/configs/pkd_inherit_demo_faster_rcnn.py',
                 answer='benchmarks/configs/answer_quality_faster_rcnn.py')

resources = dict(max_concurrent=2)
