# The search of benchmarks/search_quality.py on the demo Faster R-CNN pair: the plan of quality_retinanet.py (its
# population, generations and re-evaluations per input), on the pair, inputs and baselines of demo_faster_rcnn.py.
# Fixed before any result of this search was seen.
_base_ = ['./quality_retinanet.py']

teacher = dict(
    config='configs/demo/faster_rcnn_teacher.py',
    checkpoint='work_dirs/demo/faster_rcnn_teacher/final.pth',
    train_if_missing=dict(work_dir='work_dirs/demo/faster_rcnn_teacher'),
)
student = dict(config='configs/demo/faster_rcnn_student.py')

# DetKDS's Faster R-CNN genome's four inputs (as demo_faster_rcnn.py):
# 4 x (5 + 2 x 4 explorations + 2 finalists x 2 re-evaluation seeds) + (4 + 3) + 2 x 2 = 79 evaluations at most.
search = dict(stage1_inputs=['global', 'fg_bg', 'instance', 'logits'])

# demo_faster_rcnn.py's bar: the published methods shipping a demo config for a Faster R-CNN student that the
# proxy can run (Global-Knowledge cannot: see there); GKD and Global-Knowledge are full-schedule rows of the table.
baselines = ['none', 'fgd', 'pkd', 'gkd']
