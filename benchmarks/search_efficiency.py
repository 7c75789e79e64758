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

Fitness = proxy AP of a real proxy trial (``workers/proxy.py``) under the proxy of ``--config`` (default the demo
search config's: the setting ``detkds-search fidelity`` chose) with training seed 0, so the fitness of a genome
is one deterministic number shared by all methods: evaluations are cached by (genome key, training seed) in
``--cache`` (JSON, keyed by the proxy settings too) and batches are evaluated as shared-teacher groups. A
rejected candidate scores 0.

Each method's winner (its best single-seed genome) is then re-trained on ``--reeval-seeds`` (default 1 2) and
scored by its mean over the three training seeds: what a search decides on, not one lucky seed.

Reported per method and search seed: the best single-seed AP found, the winner's multi-seed mean, and the number
of evaluations each needed to reach the final random-search best of the same seed; mean and spread over seeds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_efficiency.py [--config configs/search/demo_retinanet.py]
        [--budget 12] [--seeds 0 1 2] [--reeval-seeds 1 2] [--iterations N] [--json out.json]
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
from typing import Callable, Dict, List, Optional, Tuple

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
    parser.add_argument('--config', default='configs/search/demo_retinanet.py',
                        help='search config whose pair, data and proxy are used (RetinaNet family)')
    parser.add_argument('--teacher-checkpoint', help='default: the config\'s teacher.checkpoint')
    parser.add_argument('--input', default='global', help='stage-1 knowledge input searched')
    parser.add_argument('--budget', type=int, default=12, help='proxy evaluations per method and search seed')
    parser.add_argument('--population', type=int, default=4)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='search seeds')
    parser.add_argument('--reeval-seeds', type=int, nargs='*', default=[1, 2],
                        help='training seeds each method\'s winner is re-trained on (beside seed 0)')
    parser.add_argument('--methods', nargs='+', default=['evolution', 'random', 'tpe'])
    parser.add_argument('--iterations', type=int, help='override proxy.iterations')
    parser.add_argument('--train-images', type=int, help='override proxy.train_images')
    parser.add_argument('--val-images', type=int, help='override proxy.val_images')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--cache', default=osp.join(ROOT, 'benchmarks', 'search_efficiency_cache.json'))
    parser.add_argument('--json')
    return parser.parse_args()


def proxy_config(args) -> dict:
    """The search config as workers receive it, with the command's overrides."""
    from distill_core.model_config import load_config
    cfg = {k: v for k, v in load_config(osp.join(ROOT, args.config)).to_dict().items() if not k.startswith('_')}
    if args.teacher_checkpoint:
        cfg['teacher']['checkpoint'] = osp.abspath(args.teacher_checkpoint)
    for key, value in (('iterations', args.iterations), ('train_images', args.train_images),
                       ('val_images', args.val_images)):
        if value is not None:
            cfg['proxy'][key] = value
    cfg['proxy']['eval_interval'] = None   # the fitness only: no intermediate evaluations
    return {k: cfg[k] for k in ('teacher', 'student', 'data', 'proxy') if k in cfg}


class Fitness:
    """Proxy AP per (genome key, training seed), cached in a JSON file keyed by the proxy's settings too."""

    def __init__(self, cfg: dict, path: str):
        self.cfg, self.path = cfg, path
        self.proxy_id = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
        self.cache: Dict[str, float] = {}
        if osp.isfile(path):
            with open(path) as f:
                self.cache = json.load(f).get(self.proxy_id, {})
        self.teacher_cache_dir = osp.join(osp.dirname(path), f'.teacher_cache_{self.proxy_id}')
        self.trained = 0
        self.seconds = 0.0

    @staticmethod
    def _slot(genome: Genome, seed: int) -> str:
        return genome.key() if seed == 0 else f'{genome.key()}@{seed}'   # seed 0 keeps older caches' keys

    def evaluate(self, genomes: List[Genome], seed: int = 0) -> List[float]:
        todo = {}
        for genome in genomes:
            slot = self._slot(genome, seed)
            if slot not in self.cache and slot not in todo:
                todo[slot] = genome
        if todo:
            start = time.time()
            results = run_proxy_group(self.cfg, list(todo.values()), [seed] * len(todo), base_dir=ROOT,
                                      teacher_cache_dir=self.teacher_cache_dir, expected_trials=100)
            self.seconds += time.time() - start
            self.trained += len(todo)
            for slot, result in zip(todo, results):
                ap = 0.0 if result.failure is not None else result.metrics['AP']
                self.cache[slot] = 0.0 if ap is None or math.isnan(ap) else float(ap)
            self._save()
        return [self.cache[self._slot(g, seed)] for g in genomes]

    def _save(self) -> None:
        data = {}
        os.makedirs(osp.dirname(osp.abspath(self.path)), exist_ok=True)
        if osp.isfile(self.path):
            with open(self.path) as f:
                data = json.load(f)
        data[self.proxy_id] = dict(sorted(self.cache.items()))
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(data, f, indent=0)
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------- methods
Evaluated = List[Tuple[Genome, float]]   # (genome, seed-0 proxy AP) in evaluation order


def run_evolution(ops: Stage1Ops, fitness: Fitness, budget: int, population: int, seed: int) -> Evaluated:
    generations = 1 + math.ceil(max(budget - population, 0) / (population - 1))
    plan = StagePlan(stage1_inputs=(ops.input,), population_size=population, generations=generations,
                     stage2_generations=0, tournament_size=2, elite_count=1, reeval_top_k=0, seed=seed)
    evolution = Evolution(plan, {ops.input: ops})
    evaluated: Evaluated = []
    while not evolution.finished and len(evaluated) < budget:
        proposals = evolution.ask(budget - len(evaluated))
        if not proposals:
            break
        for proposal, value in zip(proposals, fitness.evaluate([p.genome for p in proposals])):
            evolution.tell(proposal, Result.complete(value))
            evaluated.append((proposal.genome, value))
    return evaluated


def run_random(ops: Stage1Ops, fitness: Fitness, budget: int, population: int, seed: int) -> Evaluated:
    rng = random.Random(seed)
    genomes = [ops.sample(rng) for _ in range(budget)]
    evaluated: Evaluated = []
    for i in range(0, budget, population):   # evaluated in groups of `population`, like the others
        evaluated += zip(genomes[i:i + population], fitness.evaluate(genomes[i:i + population]))
    return evaluated


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


def run_tpe(ops: Stage1Ops, fitness: Fitness, budget: int, population: int, seed: int) -> Evaluated:
    import optuna
    from optuna.trial import TrialState
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction='maximize', sampler=optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=population, constant_liar=True))
    evaluated: Evaluated = []
    while len(evaluated) < budget:
        batch = []
        while len(batch) < min(population, budget - len(evaluated)):
            trial = study.ask()
            genome = _tpe_genome(trial, ops)
            if genome is None:
                study.tell(trial, state=TrialState.FAIL)   # outside the space: free, not an evaluation
            else:
                batch.append((trial, genome))
        for (trial, genome), value in zip(batch, fitness.evaluate([g for _, g in batch])):
            study.tell(trial, value)
            evaluated.append((genome, value))
    return evaluated


METHODS: Dict[str, Callable] = dict(evolution=run_evolution, random=run_random, tpe=run_tpe)


def evaluations_to_reach(values: List[float], target: float) -> Optional[int]:
    for i, value in enumerate(values, 1):
        if value >= target - 1e-12:
            return i
    return None


def winner_score(evaluated: Evaluated, fitness: Fitness, reeval_seeds: List[int]) -> Tuple[Genome, float, List[float]]:
    """The run's winner (best seed-0 AP, first found on ties), its mean AP over seed 0 and ``reeval_seeds``, and
    the per-seed APs."""
    genome, value = max(evaluated, key=lambda pair: pair[1])
    aps = [value] + [fitness.evaluate([genome], seed)[0] for seed in reeval_seeds]
    return genome, statistics.fmean(aps), aps


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = proxy_config(args)
    fitness = Fitness(cfg, args.cache)
    ops = Stage1Ops(Space.default(), args.input, FAMILY)
    runs: Dict[str, Dict[int, Evaluated]] = {m: {} for m in args.methods}
    winners: Dict[str, Dict[int, dict]] = {m: {} for m in args.methods}
    start = time.time()
    for seed in args.seeds:
        for method in args.methods:
            runs[method][seed] = evaluated = METHODS[method](ops, fitness, args.budget, args.population, seed)
            genome, mean, aps = winner_score(evaluated, fitness, args.reeval_seeds)
            winners[method][seed] = dict(key=genome.key(), formula=genome.formula(), aps=aps, mean=mean)
            print(f'[search_efficiency] seed {seed} {method}: best AP {aps[0]:.4f} after {len(evaluated)} '
                  f'evaluations, winner mean {mean:.4f} over {len(aps)} training seeds ({fitness.trained} trained so '
                  f'far, {time.time() - start:.0f} s)', flush=True)

    proxy = cfg['proxy']
    print(f'\n{args.budget} evaluations per run, stage-1 input {args.input!r}, proxy {proxy["iterations"]} iterations '
          f'x batch {proxy["batch_size"]}, {proxy["train_images"]}/{proxy["val_images"]} images; winners re-trained on '
          f'seeds {args.reeval_seeds}; {fitness.trained} proxy trainings in this run ({fitness.seconds:.0f} s), '
          f'{len(fitness.cache)} cached')
    print('| method | best single-seed AP per search seed | winner multi-seed mean per search seed | mean ± std of '
          'the winners\' means | evaluations to reach the random-search best |')
    print('|---|---|---|---|---|')
    summary = {}
    for method in args.methods:
        bests = [max(v for _, v in runs[method][s]) for s in args.seeds]
        means = [winners[method][s]['mean'] for s in args.seeds]
        reach = [evaluations_to_reach([v for _, v in runs[method][s]], max(v for _, v in runs['random'][s]))
                 if 'random' in runs else None for s in args.seeds]
        spread = statistics.stdev(means) if len(means) > 1 else 0.0
        summary[method] = dict(best=bests, winner_means=means, mean=statistics.fmean(means), std=spread, reach=reach,
                               winners=[winners[method][s] for s in args.seeds])
        print(f'| {method} | {", ".join(f"{b:.4f}" for b in bests)} | {", ".join(f"{m:.4f}" for m in means)} | '
              f'{statistics.fmean(means):.4f} ± {spread:.4f} | '
              f'{", ".join("never" if r is None else str(r) for r in reach)} |')
    values = sorted(v for k, v in fitness.cache.items() if '@' not in k)
    print(f'\nfitness landscape over the {len(values)} genomes cached at seed 0: min {values[0]:.4f}, median '
          f'{statistics.median(values):.4f}, max {values[-1]:.4f}')
    if args.json:
        curves = {m: {s: [v for _, v in runs[m][s]] for s in args.seeds} for m in args.methods}
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), proxy=proxy, curves=curves, summary=summary, load=os.getloadavg()), f,
                      indent=1)


if __name__ == '__main__':
    main()
