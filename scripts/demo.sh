#!/usr/bin/env bash
# The main job on the embedded defaults: a small DetKDS search on the demo RetinaNet pair, on local Ray with
# the journal-file storage in runs/demo_retinanet/. From a fresh clone it first generates the synthetic
# shapes data and trains the tiny teacher (both cached), then evolves the distiller, exports the winner to
# runs/demo_retinanet/demo_retinanet_best.py and evaluates the teacher with pycocotools for reference.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI=".venv/bin/detkds-search"
$CLI launch configs/search/demo_retinanet.py --study demo_retinanet
$CLI status --study demo_retinanet
$CLI test configs/demo/retinanet_teacher.py work_dirs/demo/retinanet_teacher/final.pth \
  --work-dir work_dirs/demo/eval_teacher --out work_dirs/demo/teacher_metrics.json
