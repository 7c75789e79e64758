# Issue 15, session 11: how well does the demo's 40-iteration proxy rank the published recipes? Session 5's
# fidelity panel (benchmarks/results/fidelity_demo_retinanet.json) trained every baseline member with the proxy's
# strategy (the teacher's neck/head inherited); since session 11 `fidelity` trains each baseline its recipe, as
# the search's baselines do: the student alone inherits nothing and PKD's demo recipe does not inherit (FGD's and
# MGD's do). This re-measures the six members that are not random genomes (none, FGD, MGD, PKD, the two DetKDS
# RetinaNet genomes; `--panel 6`) on the same seeds (0, 1), with the same reference (the full demo schedule) and
# the same proxy as the demo, one run at a time (the machine's other core trains something else). Fixed before
# any of its results:
#   detkds-search fidelity benchmarks/configs/fidelity_demo_retinanet_recipes.py \
#       --study fidelity_demo_retinanet_recipes --panel 6 --seeds 2 --reference full --proxy iterations=40
_base_ = ['../../configs/search/demo_retinanet.py']

resources = dict(max_concurrent=1)
