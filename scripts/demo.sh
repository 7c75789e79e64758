#!/usr/bin/env bash
# The main job on the embedded defaults (CPU, synthetic data): generate the shapes data, train the tiny
# RetinaNet teacher once (cached), train the distilled student, and evaluate both with pycocotools.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI=".venv/bin/detkds-search"
TEACHER=work_dirs/demo/retinanet_teacher
[ -f data/shapes/annotations/val.json ] || $CLI data shapes --out data/shapes
[ -f $TEACHER/final.pth ] || $CLI train configs/demo/retinanet_teacher.py --work-dir $TEACHER
$CLI test configs/demo/retinanet_teacher.py $TEACHER/final.pth --work-dir work_dirs/demo/eval_teacher \
  --out work_dirs/demo/teacher_metrics.json
$CLI train configs/demo/distill_retinanet_fi.py --work-dir work_dirs/demo/distill_retinanet_fi
$CLI transfer work_dirs/demo/distill_retinanet_fi/final.pth work_dirs/demo/student_distilled.pth
$CLI test configs/demo/retinanet_student.py work_dirs/demo/student_distilled.pth \
  --work-dir work_dirs/demo/eval_student --out work_dirs/demo/student_metrics.json
echo "teacher:           $(cat work_dirs/demo/teacher_metrics.json | tr -d '\n ' | cut -c1-200)"
echo "distilled student: $(cat work_dirs/demo/student_metrics.json | tr -d '\n ' | cut -c1-200)"
