"""Search efficiency at an equal budget of proxy evaluations: our evolution vs random search vs Optuna TPE.

Every method searches the same stage-1 space (one knowledge input, default ``global``, of the default search
space for the RetinaNet family) for ``--budget`` proxy evaluations, per search seed:

* ``evolution``: ``search.evolution.Evolution`` with ``Stage1Ops`` (generation 0 = published formulations +
  random samples; tournament, crossover, mutation, elitism), no re-evaluation (every evaluation explores) and
  no stage 2, population ``--population``;
* ``random``: uniform ``Stage1Ops.sample`` draws (what the reference release's NSGA-II with fewer trials than
  its population does: generation 0 only, i.e. independent random sampling);
* ``tpe``: Optuna ``TPESampler`` (``n_startup_trials=--population``, ``constant_liar``) over a categorical
  encoding of the same genes (op per cascade slot, each op's parameters, distance and its parameters,
  weight); an invalid combination (e.g. a distance ill-posed after the cascade) is told FAIL at no cost and does
  not count; a repeated genome counts (the sampler spent the evaluation).

Fitness = proxy AP of a real proxy trial (``workers/proxy.py``) on the demo pair with training seed 0, so the
fitness of a genome is one deterministic number shared by all methods: evaluations are cached by genome key in
``--cache`` (JSON) and batches are evaluated as shared-teacher groups. A rejected candidate scores 0.

Reported per method and seed: the best AP found, and the number of evaluations each needed to reach the final
random-search best of the same seed; mean and spread over seeds.

    .venv/bin/python benchmarks/search_efficiency.py --teacher-checkpoint work_dirs/.../final.pth \\
        [--budget 10] [--seeds 0 1 2] [--iterations 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import os.path as osp
import random
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from distill_core.genome import Genome, OpSpec, Term  # noqa: E402
from search.evolution import Evolution, Result, StagePlan  # noqa: E402
from search.operators import Stage1Ops  # noqa: E402
from search.space import Space  # noqa: E402
from workers.proxy import run_proxy_group  # noqa: E402

FAMILY = 'retinanet'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--teacher-checkpoint', required=True, help='a trained demo RetinaNet teacher')
    parser.add_argument('--data-root', default='data/shapes')
    parser.add_argument('--input', default='global', help='stage-1 knowledge input searched')
    parser.add_argument('--budget', type=int, default=10, help='proxy evaluations per method and seed')
    parser.add_argument('--population', type=int, default=4)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--methods', nargs='+', default=['evolution', 'random', 'tpe'])
    parser.add_argument('--iterations', type=int, default=8)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--train-images', type=int, default=32)
    parser.add_argument('--val-images', type=int, default=24)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--cache', default=osp.join(ROOT, 'benchmarks', 'search_efficiency_cache.json'))
    parser.add_argument('--json')
    return parser.parse_args()


class Fitness:
    """Proxy AP per genome key (training seed 0), cached in a JSON file keyed by the proxy's settings too."""

    def __init__(self, cfg: dict, path: str):
        self.cfg, self.path = cfg, path
        self.proxy_id = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
        self.cache: Dict[str, float] = {}
        if osp.isfile(path):
            with open(path) as f:
                self.cache = json.load(f).get(self.proxy_id, {})
        self.trained = 0
        self.seconds = 0.0

    def evaluate(self, genomes: List[Genome]) -> List[float]:
        todo = {}
        for genome in genomes:
            key = genome.key()
            if key not in self.cache and key not in todo:
                todo[key] = genome
        if todo:
            start = time.time()
            results = run_proxy_group(self.cfg, list(todo.values()), [0] * len(todo), base_dir=ROOT)
            self.seconds += time.time() - start
            self.trained += len(todo)
            for key, result in zip(todo, results):
                ap = 0.0 if result.failure is not None else result.metrics['AP']
                self.cache[key] = 0.0 if ap is None or math.isnan(ap) else float(ap)
            self._save()
        return [self.cache[g.key()] for g in genomes]

    def _save(self) -> None:
        data = {}
        if osp.isfile(self.path):
            with open(self.path) as f:
                data = json.load(f)
        data[self.proxy_id] = dict(sorted(self.cache.items()))
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(data, f, indent=0)
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------- methods
def run_evolution(ops: Stage1Ops, fitness: Fitness, budget: int, population: int, seed: int) -> List[float]:
    generations = 1 + math.ceil(max(budget - population, 0) / (population - 1))
    plan = StagePlan(stage1_inputs=(ops.input,), population_size=population, generations=generations,
                     stage2_generations=0, tournament_size=2, elite_count=1, reeval_top_k=0, seed=seed)
    evolution = Evolution(plan, {ops.input: ops})
    values: List[float] = []
    while not evolution.finished and len(values) < budget:
        proposals = evolution.ask(budget - len(values))
        if not proposals:
            break
        for proposal, value in zip(proposals, fitness.evaluate([p.genome for p in proposals])):
            evolution.tell(proposal, Result.complete(value))
            values.append(value)
    return values


def run_random(ops: Stage1Ops, fitness: Fitness, budget: int, population: int, seed: int) -> List[float]:
    rng = random.Random(seed)
    genomes = [ops.sample(rng) for _ in range(budget)]
    values = []
    for i in range(0, budget, population):   # evaluated in groups of `population`, like the others
        values += fitness.evaluate(genomes[i:i + population])
    return values


def _tpe_genome(trial, ops: Stage1Ops) -> Optional[Genome]:
    """The stage-1 genome a TPE trial encodes (categorical genes, op parameters conditional on the op)."""
    space = ops.space

    def op_with_params(name: str, prefix: str) -> OpSpec:
        params = {}
        for param, options in sorted(space.param_options(name).items()):
            if len(options) > 1:
                params[param] = options[trial.suggest_categorical(f'{prefix}_{name}_{param}',
                                                                  list(range(len(options))))]
            else:
                params[param] = options[0]
        return OpSpec(name, tuple(params.items()))

    transforms = tuple(op_with_params(trial.suggest_categorical(f'slot{i}', list(table)), f'slot{i}')
                       for i, table in enumerate(ops.tables))
    distance = op_with_params(trial.suggest_categorical('distance', list(space.group_of(ops.input).distances)),
                              'distance')
    weight = ops.weights[trial.suggest_categorical('weight', list(range(len(ops.weights))))]
    genome = Genome((Term(ops.input, True, transforms, distance, float(weight)),))
    return genome if ops.problem(genome) is None else None


def run_tpe(ops: Stage1Ops, fitness: Fitness, budget: int, population: int, seed: int) -> List[float]:
    import optuna
    from optuna.trial import TrialState
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction='maximize', sampler=optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=population, constant_liar=True))
    values: List[float] = []
    while len(values) < budget:
        batch = []
        while len(batch) < min(population, budget - len(values)):
            trial = study.ask()
            genome = _tpe_genome(trial, ops)
            if genome is None:
                study.tell(trial, state=TrialState.FAIL)   # outside the space: free, not an evaluation
            else:
                batch.append((trial, genome))
        for (trial, _), value in zip(batch, fitness.evaluate([g for _, g in batch])):
            study.tell(trial, value)
            values.append(value)
    return values


METHODS: Dict[str, Callable] = dict(evolution=run_evolution, random=run_random, tpe=run_tpe)


def evaluations_to_reach(values: List[float], target: float) -> Optional[int]:
    for i, value in enumerate(values, 1):
        if value >= target - 1e-12:
            return i
    return None


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = dict(teacher=dict(config='configs/demo/retinanet_teacher.py',
                            checkpoint=osp.abspath(args.teacher_checkpoint)),
               student=dict(config='configs/demo/retinanet_student.py'),
               data=dict(data_root=osp.abspath(args.data_root)),
               proxy=dict(train_images=args.train_images, val_images=args.val_images, subset_seed=0,
                          iterations=args.iterations, batch_size=args.batch_size, val_batch_size=8,
                          optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4), grad_clip=35.0,
                          inherit_neck_head=True, report_interval=args.iterations, eval_interval=None,
                          reject=dict(check_iterations=3, max_loss=1e4)))
    fitness = Fitness(cfg, args.cache)
    ops = Stage1Ops(Space.default(), args.input, FAMILY)
    curves: Dict[str, Dict[int, List[float]]] = {m: {} for m in args.methods}
    start = time.time()
    for seed in args.seeds:
        for method in args.methods:
            curves[method][seed] = METHODS[method](ops, fitness, args.budget, args.population, seed)
            best = max(curves[method][seed])
            print(f'[search_efficiency] seed {seed} {method}: best AP {best:.4f} after {len(curves[method][seed])} '
                  f'evaluations ({fitness.trained} trained so far, {time.time() - start:.0f} s)', flush=True)

    print(f'\n{args.budget} evaluations per run, stage-1 input {args.input!r}, proxy {args.iterations} iterations x '
          f'batch {args.batch_size}, {args.train_images}/{args.val_images} images; {fitness.trained} proxy trials '
          f'trained in this run ({fitness.seconds:.0f} s), {len(fitness.cache)} distinct genomes cached')
    print('| method | best AP per seed | mean ± std | evaluations to reach the random-search best, per seed |')
    print('|---|---|---|---|')
    summary = {}
    for method in args.methods:
        bests = [max(curves[method][s]) for s in args.seeds]
        reach = [evaluations_to_reach(curves[method][s], max(curves['random'][s])) if 'random' in curves else None
                 for s in args.seeds]
        spread = statistics.stdev(bests) if len(bests) > 1 else 0.0
        summary[method] = dict(best=bests, mean=statistics.mean(bests), std=spread, reach=reach)
        print(f'| {method} | {", ".join(f"{b:.4f}" for b in bests)} | {statistics.mean(bests):.4f} ± {spread:.4f} | '
              f'{", ".join("never" if r is None else str(r) for r in reach)} |')
    values = sorted(fitness.cache.values())
    print(f'\nfitness landscape over the {len(values)} cached genomes: min {values[0]:.4f}, median '
          f'{statistics.median(values):.4f}, max {values[-1]:.4f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), curves=curves, summary=summary, load=os.getloadavg()), f, indent=1)


if __name__ == '__main__':
    main()
