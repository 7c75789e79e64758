# A small DetKDS search on the demo RetinaNet pair (shapes data), sized to finish on 2 CPU cores in minutes.
# From a fresh clone it generates the data, pretrains the demo backbones and trains the tiny teacher once (all
# cached on disk).
# Paths are relative to the folder `detkds-search launch` runs in (the repository root).

teacher = dict(
    config='configs/demo/retinanet_teacher.py',
    checkpoint='work_dirs/demo/retinanet_teacher/final.pth',
    # demo only: train the teacher with `detkds-search train` when the checkpoint is missing
    train_if_missing=dict(work_dir='work_dirs/demo/retinanet_teacher'),
)
student = dict(config='configs/demo/retinanet_student.py')

# demo only: generate the synthetic dataset when it is missing (same arguments as `detkds-search data shapes`),
# and pretrain the backbones the student and teacher configs name (their `PretrainedBackbone` init_cfg) on its
# training images when missing: the demo's stand-in for ImageNet weights (workers/backbone_pretrain.py;
# dict() = the default settings, e.g. dict(iterations=1000, batch_size=64)).
data = dict(generate_shapes=dict(out='data/shapes', num_train=600, num_val=150, size=128, seed=0),
            pretrain_backbones=dict())

# The proxy task each candidate is trained on. Both subsets are drawn (fixed seed, disjoint) from the
# TRAINING annotations: search fitness is measured on held-out training images, the val split stays for
# final reporting. Counts (int) or fractions (float < 1).
# Chosen from data (benchmarks/RESULTS.md, `detkds-search fidelity`, 12 distillers against the full schedule):
# 40 iterations rank them with Kendall tau 0.75 (0.87 on the better half), the best one kept, seed noise 0.18 of
# the spread; 20 iterations do not separate them (tau 0.57), 80 gain little (0.78) at 1.5x the cost.
proxy = dict(
    train_images=240,
    val_images=60,
    subset_seed=0,
    iterations=40,
    batch_size=8,
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    # lr_steps=[0.75], lr_gamma=0.1,   # optional step decay at fractions of `iterations` (the full schedule's
    #                                    MultiStepLR x0.1 at 450 of 600); the default is a constant lr
    grad_clip=35.0,
    inherit_neck_head=True,
    report_interval=10,          # report every loss term every N iterations
    eval_interval=20,            # proxy AP on the held-out subset every N iterations (intermediate metric)
    reject=dict(check_iterations=5, max_loss=1e4),   # non-finite or exploding distillation loss -> FAIL early
    # Teacher features of the proxy images (both flip states) computed once per search, memory-mapped by every
    # trial: 'auto' = only when the pipeline allows it (no random transform but horizontal flips, one input
    # size) and the search's teacher work exceeds the build; True insists (error if it cannot), False never.
    teacher_cache='auto',
    teacher_cache_max_gb=4,
)

space = 'search_space.yaml'

# Divide-and-conquer evolution (search/evolution.py StagePlan).
search = dict(
    stage1_inputs=['global', 'fg_bg'],
    population_size=3,
    generations=2,
    stage2_population_size=3,
    stage2_generations=1,
    tournament_size=2,
    elite_count=1,
    reeval_top_k=1,
    seed=0,
)

# Early stopping of weak proxies on the intermediate AP (recorded as PRUNED in Optuna), or None.
scheduler = dict(type='asha', grace_period=1, reduction_factor=2)

# candidates_per_trial: candidates trained per Ray trial against one shared teacher (same batches, one teacher
# forward per step); 'auto' = 1 with a scheduler, 2 on CPU, from free GPU memory on GPUs (workers/group_size.py).
resources = dict(cpus_per_trial=1, gpus_per_trial=0, max_concurrent=2, candidates_per_trial='auto')
budget = dict(max_trials=None, max_hours=None)

# What `detkds-search export` writes into the exported training config (keys: search/export.py).
full_training = dict(max_iters=600, val_interval=600, optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4))

# The bar, run before the first exploration trial under the same proxy and on the finalists' seeds (train_seed and
# the re-evaluation seeds: 3 here), never re-run on resume (search/baselines.py): the student alone and the
# published methods with their shipped demo recipes (loss weights, inheritance of the teacher's neck/head). The
# answer is a searched genome only if it beats them.
baselines = ['none', 'fgd', 'mgd', 'pkd']

# Optional (search/final_rung.py): the best finalists and baselines re-trained under a fuller proxy, which then
# decides the answer; e.g. final_rung = dict(proxy=dict(train_images=540, iterations=120, lr_steps=[0.75]),
# genomes=2, baselines=2). Off here, so that `make demo` stays within its 15 minutes.
