# The search of benchmarks/search_quality.py on the demo RetinaNet pair: the demo config (same pair, data, proxy
# chosen by `detkds-search fidelity`, teacher) with a plan of about 60 proxy evaluations instead of the demo's ~20,
# and every published baseline that serves RetinaNet as the bar. Fixed before any result of this search was seen.
_base_ = ['./demo_retinanet.py']

# Stage 1 evolves three inputs: `global` (PKD and MGD are global genomes), `fg_bg` (FGD's attention-weighted
# imitation) and `cross_head` (CrossKD's crossed predictions); stage 2 their weights and the training strategy.
# 3 x (5 + 2 x 4 explorations + 2 finalists x 2 re-evaluation seeds) + (4 + 3) + 2 x 2 = 62 evaluations at most.
search = dict(
    stage1_inputs=['global', 'fg_bg', 'cross_head'],
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

# BCKD publishes a GFL recipe only (configs/distillers/bckd), so it has no RetinaNet row.
baselines = ['none', 'fgd', 'mgd', 'pkd', 'crosskd']
