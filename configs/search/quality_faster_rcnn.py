# The search of benchmarks/search_quality.py on the demo Faster R-CNN pair: the demo Faster R-CNN search (same pair,
# data, proxy, teacher, baselines) with the plan of configs/search/quality_retinanet.py per input instead of the
# demo's. Fixed before any result of this search was seen.
_base_ = ['./demo_faster_rcnn.py']

# Stage 1 evolves the demo's four inputs (DetKDS's Faster R-CNN genome: global, fg_bg, instance, logits).
# 4 x (5 + 2 x 4 explorations + 2 finalists x 2 re-evaluation seeds) + (4 + 3) + 2 x 2 = 79 evaluations at most.
search = dict(
    population_size=5,
    generations=3,
    stage2_population_size=4,
    stage2_generations=2,
    tournament_size=2,
    elite_count=1,
    reeval_top_k=2,
    reeval_seeds=2,
    seed=0,
)

# One proxy at a time: the benchmark trains the full-schedule rows on the machine's other core meanwhile.
resources = dict(cpus_per_trial=1, gpus_per_trial=0, max_concurrent=1, candidates_per_trial='auto')
