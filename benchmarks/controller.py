"""Controller overhead: worker utilisation and dispatch latency on local Ray, storage write throughput.

Part 1 (Ray): the real controller path with a no-op trainable. A real :class:`~search.evolution.Evolution` over
``Space.default()`` (two stage-1 inputs and stage 2, a :class:`StagePlan` chosen by a dry run so that about
``--trials`` trials run), :class:`~search.searcher.EvolutionSearcher` + :class:`~search.study.TrialBook` writing to
a journal file, and a Ray Tune ``Tuner`` configured as ``search/controller.py`` configures it (``num_samples=-1``,
``max_concurrent_trials=2``, 1 CPU per trial, no actor reuse, ``TrialRetryRecorder``) on
``ray.init(num_cpus=2)``. Only the trainable differs: it sleeps ``--trial-seconds`` and reports one final result
in the format of ``workers/tune_trial.py`` (``trial_status='COMPLETE'``, ``iteration``, ``AP`` = a pseudo-fitness
hashed from the genome JSON, two loss keys) plus its own start/end wall-clock times.

  utilisation      = sum of trial busy time / (2 workers x (last end - first start))
  dispatch latency = per worker slot (intervals assigned greedily by start time), the gap between one trial's
                     end and the next trial's start on that slot; split into "end -> suggest" (Tune processes
                     the result, the searcher closes the trial in storage, the evolution is told, and the time
                     spent waiting while the evolution has nothing to propose) and "suggest -> start" (Ray
                     starts the trial's actor).

The searcher is subclassed here only to time ``suggest`` (when it handed out a proposal, how often it had
nothing to give: the generation barrier); its behaviour is unchanged.

Part 2 (storage): the writes the controller makes per trial through ``TrialBook`` (``start``: user attributes +
genome parameters; ``--reports`` intermediate reports; ``finish``) and the per-trial progress attribute the
launch writes, for ``--write-trials`` trials, on a journal file and on PostgreSQL (a private server started like
the tests' one, ``tests/pg_server.py``, or ``--postgres-url``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/controller.py [--trials 64] [--trial-seconds 3]
        [--write-trials 200] [--reports 3] [--postgres-url URL] [--skip-ray] [--skip-storage] [--json out.json]
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import os.path as osp
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from search.evolution import COMPLETE, Evolution, StagePlan  # noqa: E402
from search.operators import build_ops  # noqa: E402
from search.space import Space  # noqa: E402

SLOTS = 2                      # Ray workers (num_cpus=2, 1 CPU per trial)
TARGET_UTILISATION = 0.90


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--trials', type=int, default=64, help='about this many trials in the Ray run')
    parser.add_argument('--trial-seconds', type=float, default=3.0, help='sleep of the no-op trainable')
    parser.add_argument('--inputs', default='all',
                        help="stage-1 inputs, comma-separated, or 'all' (the product default: every input of the "
                             "space, interleaved)")
    parser.add_argument('--elite', type=int, default=StagePlan.elite_count,
                        help='elite count (default: the product default)')
    parser.add_argument('--write-trials', type=int, default=200, help='trials written per storage backend')
    parser.add_argument('--reports', type=int, default=3, help='intermediate reports per written trial')
    parser.add_argument('--postgres-url', help='existing PostgreSQL database (default: a private server)')
    parser.add_argument('--fresh-actors', action='store_true',
                        help='what-if: a new Ray actor per trial (reuse_actors=False; the controller reuses them)')
    parser.add_argument('--skip-ray', action='store_true')
    parser.add_argument('--skip-storage', action='store_true')
    parser.add_argument('--json', help='write every figure here')
    args = parser.parse_args()
    args.reuse_actors = not args.fresh_actors   # what search/controller.py does
    return args


def pseudo_fitness(genome_json: str) -> float:
    """A deterministic AP in [0, 0.5) from the genome JSON (no training)."""
    return int(hashlib.sha256(genome_json.encode()).hexdigest()[:8], 16) / 2 ** 32 * 0.5


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float('nan')
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_average() -> str:
    return ' '.join(f'{x:.2f}' for x in os.getloadavg())


# ----------------------------------------------------------------------------------------- plan choice
def simulate(plan: StagePlan, space: Space) -> int:
    """Trials the real evolution runs under ``plan`` with the pseudo-fitness (ask/tell, no Ray)."""
    stage1, stage2 = build_ops(space, plan.stage1_inputs or None)
    evolution = Evolution(plan, stage1, stage2)
    trials = 0
    while not evolution.finished:
        proposals = evolution.ask(SLOTS)
        if not proposals:
            raise RuntimeError('the evolution proposes nothing with no trial in flight')
        for proposal in proposals:
            evolution.tell(proposal, pseudo_fitness(proposal.genome.to_json()))
            trials += 1
    return trials


def choose_plan(target: int, space: Space, inputs: Tuple[str, ...], elite: int) -> Tuple[StagePlan, int]:
    """The plan (``inputs``, () = all; stage 2 included) whose dry run is closest to ``target`` trials; ties
    prefer more generations (more generation barriers, as in a real search)."""
    best = None
    num_inputs = len(inputs) or len(build_ops(space, None)[0])
    for population, generations, population2, generations2 in itertools.product(
            (4, 6, 8, 10, 12), (2, 3, 4), (4, 6, 8), (2, 3)):
        plan = StagePlan(stage1_inputs=inputs, population_size=population, generations=generations,
                         stage2_population_size=population2, stage2_generations=generations2, elite_count=elite,
                         tournament_size=2, reeval_top_k=2, reeval_seeds=1, seed=0)
        if not target * 0.7 <= plan.max_evaluations(num_inputs) <= target * 1.6:
            continue
        trials = simulate(plan, space)
        score = (abs(trials - target), -(generations + generations2))
        if best is None or score < best[0]:
            best = (score, plan, trials)
    if best is None:
        raise SystemExit(f'no plan in the grid gives about {target} trials')
    return best[1], best[2]


# ----------------------------------------------------------------------------------------- Ray run
def noop_trainable(config: Dict[str, Any], trial_seconds: float = 3.0) -> None:
    """Sleeps, then one final report in ``workers/tune_trial.py``'s format, with its start/end times."""
    import hashlib as _hashlib
    import time as _time

    from ray import tune
    started = _time.time()
    _time.sleep(trial_seconds)
    digest = _hashlib.sha256(config['genome'].encode()).hexdigest()
    ap = int(digest[:8], 16) / 2 ** 32 * 0.5
    ended = _time.time()
    tune.report({'trial_status': 'COMPLETE', 'iteration': 1, 'AP': ap, 'AP50': min(1.0, 1.5 * ap),
                 'loss_cls': 1.0 - ap, 'loss_bbox': 0.5 + ap / 2, 'bench_started': started, 'bench_ended': ended,
                 'bench_proposal': config['proposal']})


def slot_gaps(intervals: List[Tuple[float, float, str]]) -> List[Tuple[float, str, str]]:
    """Assign intervals (start, end, id) to SLOTS slots greedily by start time; (gap, previous id, next id)
    between consecutive intervals of a slot."""
    slots: List[Optional[Tuple[float, float, str]]] = [None] * SLOTS
    gaps = []
    for interval in sorted(intervals):
        free = [i for i in range(SLOTS) if slots[i] is None or slots[i][1] <= interval[0] + 1e-6]
        if not free:   # more than SLOTS overlapping: clock noise; take the slot that ends first
            free = [min(range(SLOTS), key=lambda i: slots[i][1])]
        slot = min(free, key=lambda i: -1.0 if slots[i] is None else slots[i][1])
        if slots[slot] is not None:
            gaps.append((interval[0] - slots[slot][1], slots[slot][2], interval[2]))
        slots[slot] = interval
    return gaps


def run_ray(args, space: Space) -> Dict[str, Any]:
    import ray
    from optuna.trial import TrialState
    from ray import tune

    from search import study as st
    from search.searcher import EvolutionSearcher, TrialRetryRecorder
    from search.storage import open_storage

    inputs = () if args.inputs == 'all' else tuple(args.inputs.split(','))
    plan, planned = choose_plan(args.trials, space, inputs, args.elite)
    print(f'[ray] plan: inputs {list(plan.stage1_inputs) or "all"}, population {plan.population_size} x '
          f'{plan.generations} generations, stage 2 {plan.stage2_population_size} x {plan.stage2_generations}, '
          f'elite {plan.elite_count}, re-evaluate top {plan.reeval_top_k}: {planned} trials in the dry run')

    class TimedSearcher(EvolutionSearcher):
        """Only records when suggest handed out a proposal and how often it had none ready."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.suggested_at: Dict[str, float] = {}
            self.empty_suggests = 0
            self.suggest_s: List[float] = []
            self.complete_s: List[float] = []

        def suggest(self, trial_id):
            t0 = time.time()
            config = super().suggest(trial_id)
            self.suggest_s.append(time.time() - t0)
            if isinstance(config, dict):
                self.suggested_at[config['proposal']] = time.time()
            elif config is None:
                self.empty_suggests += 1
            return config

        def on_trial_complete(self, *a, **kw):
            t0 = time.time()
            super().on_trial_complete(*a, **kw)
            self.complete_s.append(time.time() - t0)

    tmp = tempfile.mkdtemp(prefix='detkds-bench-ctl-')
    storage = open_storage(None, tmp)   # the launch's default: journal file in the run dir
    study = st.open_study(storage, 'bench')
    stage1, stage2 = build_ops(space, plan.stage1_inputs or None)
    evolution = Evolution.replay(st.replay_records(study), plan, stage1, stage2)
    book = st.TrialBook(study, space)

    def on_progress(evo, _book):   # the launch's per-trial storage write (the status line is not printed)
        study.set_user_attr(st.STUDY_PROGRESS, json.dumps(evo.progress(), default=str))

    searcher = TimedSearcher(evolution, book, on_progress=on_progress)
    os.environ.setdefault('TUNE_DISABLE_STRICT_METRIC_CHECKING', '1')
    os.environ.setdefault('RAY_AIR_NEW_OUTPUT', '0')
    ray.init(num_cpus=SLOTS, include_dashboard=False, log_to_driver=False, logging_level='ERROR')
    try:
        trainable = tune.with_resources(tune.with_parameters(noop_trainable, trial_seconds=args.trial_seconds),
                                        {'cpu': 1, 'gpu': 0})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=SLOTS,
                                        reuse_actors=args.reuse_actors),
            run_config=tune.RunConfig(name='bench', storage_path=osp.join(tmp, 'ray'), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=2),
                                      callbacks=[TrialRetryRecorder(searcher)],
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        fit_start = time.time()
        grid = tuner.fit()
        fit_s = time.time() - fit_start
    finally:
        ray.shutdown()

    intervals, errors = [], 0
    for result in grid:
        metrics = result.metrics or {}
        if result.error is not None or 'bench_started' not in metrics:
            errors += 1
            continue
        intervals.append((metrics['bench_started'], metrics['bench_ended'], metrics['bench_proposal']))
    if not intervals:
        raise SystemExit('[ray] no trial reported')
    by_id = {i[2]: i for i in intervals}
    busy = sum(end - start for start, end, _ in intervals)
    span = max(i[1] for i in intervals) - min(i[0] for i in intervals)
    gaps = slot_gaps(intervals)
    latency = [g for g, _, _ in gaps]
    # The gap's two parts: previous end -> the next trial's suggest; that suggest -> the next trial's start.
    to_suggest = [searcher.suggested_at[nxt] - by_id[prev][1] for _, prev, nxt in gaps
                  if nxt in searcher.suggested_at]
    to_start = [by_id[nxt][0] - searcher.suggested_at[nxt] for _, _, nxt in gaps if nxt in searcher.suggested_at]
    # Idle worker time at the very end: the last trial alone (a straggler with no proposal left).
    ends = sorted(i[1] for i in intervals)
    tail_idle = ends[-1] - ends[-2] if len(ends) > 1 else 0.0
    counts = {s.name: sum(t.state == s for t in study.get_trials(deepcopy=False))
              for s in TrialState}

    def stats(values):
        return dict(mean=statistics.fmean(values) if values else float('nan'),
                    median=statistics.median(values) if values else float('nan'),
                    p95=percentile(values, 0.95), max=max(values) if values else float('nan'))

    out = dict(plan=dict(population=plan.population_size, generations=plan.generations,
                         stage2_population=plan.stage2_population_size, stage2_generations=plan.stage2_generations,
                         elite=plan.elite_count, reeval_top_k=plan.reeval_top_k, dry_run_trials=planned),
               reuse_actors=args.reuse_actors, trials=len(intervals), errors=errors,
               idle_s=SLOTS * span - busy, idle_between_trials_s=sum(latency),
               idle_end_to_suggest_s=sum(to_suggest), idle_suggest_to_start_s=sum(to_start), evolution_finished=evolution.finished, study_states=counts,
               trial_seconds=args.trial_seconds, fit_s=fit_s, busy_s=busy, span_s=span,
               utilisation=busy / (SLOTS * span), ideal_span_s=busy / SLOTS, latency_s=stats(latency),
               end_to_suggest_s=stats(to_suggest), suggest_to_start_s=stats(to_start), tail_idle_s=tail_idle,
               empty_suggests=searcher.empty_suggests, suggest_call_s=stats(searcher.suggest_s),
               on_trial_complete_s=stats(searcher.complete_s), load_average_after=load_average(),
               gaps=[dict(gap=gap, previous=prev, next=nxt, ended=by_id[prev][1] - fit_start,
                          to_suggest=searcher.suggested_at[nxt] - by_id[prev][1] if nxt in searcher.suggested_at
                          else None) for gap, prev, nxt in gaps])
    shutil.rmtree(tmp, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------------------- storage writes
def write_proposals(space: Space, count: int) -> Tuple[List[Any], Evolution]:
    """``count`` real proposals (all five inputs, the default plan), told the pseudo-fitness as they come."""
    stage1, stage2 = build_ops(space)
    evolution = Evolution(StagePlan(), stage1, stage2)
    proposals = []
    while len(proposals) < count and not evolution.finished:
        for proposal in evolution.ask(SLOTS):
            evolution.tell(proposal, pseudo_fitness(proposal.genome.to_json()))
            proposals.append(proposal)
    return proposals[:count], evolution


def time_writes(url: Optional[str], run_dir: Optional[str], proposals, space: Space, reports: int,
                label: str) -> Dict[str, Any]:
    from search import study as st
    from search.storage import open_storage
    storage = open_storage(url, run_dir)
    study = st.open_study(storage, f'bench-writes-{int(time.time())}')
    book = st.TrialBook(study, space)
    progress = json.dumps({'counts': {'told': 0}, 'streams': [{'input': i, 'generation': 0} for i in space.inputs]})
    per_trial, book_only = [], []
    start = time.perf_counter()
    for number, proposal in enumerate(proposals):
        ap = pseudo_fitness(proposal.genome.to_json())
        t0 = time.perf_counter()
        book.start(proposal)
        for iteration in range(1, reports + 1):
            row = {'iteration': iteration, 'loss_cls': 1.0 / iteration, 'loss_bbox': 0.5 / iteration}
            if iteration == reports:
                row.update(AP=ap, trial_status=COMPLETE)
            book.report(proposal.id, row)
        book.finish(proposal.id, COMPLETE, ap, '', {'AP': ap, 'AP50': ap * 1.5})
        t1 = time.perf_counter()
        study.set_user_attr(st.STUDY_PROGRESS, progress)   # the launch writes the progress once per trial
        t2 = time.perf_counter()
        book_only.append(t1 - t0)
        per_trial.append(t2 - t0)
    total = time.perf_counter() - start
    n = len(proposals)
    quarter = max(n // 4, 1)
    result = dict(backend=label, trials=n, reports=reports, total_s=total, trials_per_s=n / total,
                  ms_per_trial=1000 * statistics.fmean(per_trial), ms_per_trial_book_only=1000 * statistics.fmean(
                      book_only), ms_first_quarter=1000 * statistics.fmean(per_trial[:quarter]),
                  ms_last_quarter=1000 * statistics.fmean(per_trial[-quarter:]),
                  p95_ms=1000 * percentile(per_trial, 0.95), load_average_after=load_average())
    if hasattr(storage, 'engine'):
        storage.engine.dispose()
    return result


def run_storage(args, space: Space) -> List[Dict[str, Any]]:
    proposals, _ = write_proposals(space, args.write_trials)
    results = []
    with tempfile.TemporaryDirectory(prefix='detkds-bench-journal-') as tmp:
        results.append(time_writes(None, tmp, proposals, space, args.reports, 'journal file'))
    print_write(results[-1])
    server = None
    try:
        url = args.postgres_url
        if not url:
            from tests.pg_server import PrivatePostgres, postgres_bin_dir
            bin_dir = postgres_bin_dir()
            if bin_dir is None:
                print('[storage] PostgreSQL binaries not found: PostgreSQL skipped (or pass --postgres-url)')
                return results
            server = PrivatePostgres(bin_dir, database='detkds_bench')
            url = server.url
        results.append(time_writes(url, None, proposals, space, args.reports, 'PostgreSQL'))
        print_write(results[-1])
    finally:
        if server is not None:
            server.stop()
    return results


def print_write(r: Dict[str, Any]) -> None:
    print(f'[storage] {r["backend"]}: {r["trials"]} trials x (start + {r["reports"]} reports + finish + progress) '
          f'in {r["total_s"]:.2f} s: {r["trials_per_s"]:.1f} trials/s, {r["ms_per_trial"]:.1f} ms/trial '
          f'(TrialBook alone {r["ms_per_trial_book_only"]:.1f}; first quarter {r["ms_first_quarter"]:.1f}, last '
          f'{r["ms_last_quarter"]:.1f}; p95 {r["p95_ms"]:.1f}) | load {r["load_average_after"]}')


def print_ray(r: Dict[str, Any]) -> None:
    lat, ts, ss = r['latency_s'], r['end_to_suggest_s'], r['suggest_to_start_s']
    verdict = 'MET' if r['utilisation'] >= TARGET_UTILISATION else 'NOT met'
    print(f'[ray] {r["trials"]} trials ({r["errors"]} errors, evolution finished: {r["evolution_finished"]}, '
          f'study {r["study_states"]}) of {r["trial_seconds"]} s on {SLOTS} workers; fit {r["fit_s"]:.1f} s')
    print(f'[ray] utilisation {100 * r["utilisation"]:.1f} % (target >= {100 * TARGET_UTILISATION:.0f} %: {verdict}); '
          f'busy {r["busy_s"]:.1f} s over span {r["span_s"]:.1f} s (ideal {r["ideal_span_s"]:.1f} s); '
          f'last trial alone {r["tail_idle_s"]:.2f} s; reuse_actors={r["reuse_actors"]}')
    print(f'[ray] idle worker time {r["idle_s"]:.1f} s: between trials {r["idle_between_trials_s"]:.1f} s = end -> '
          f'suggest {r["idle_end_to_suggest_s"]:.1f} s + suggest -> start {r["idle_suggest_to_start_s"]:.1f} s; '
          f'the rest is the start/finish edges of the run')
    print(f'[ray] dispatch latency per slot: mean {lat["mean"]:.3f} s, median {lat["median"]:.3f} s, '
          f'p95 {lat["p95"]:.3f} s, max {lat["max"]:.3f} s')
    print(f'[ray]   end -> suggest: mean {ts["mean"]:.3f}, median {ts["median"]:.3f}, p95 {ts["p95"]:.3f} s | '
          f'suggest -> start: mean {ss["mean"]:.3f}, median {ss["median"]:.3f}, p95 {ss["p95"]:.3f} s | '
          f'suggest() returned nothing {r["empty_suggests"]} times; suggest() {1000 * r["suggest_call_s"]["mean"]:.1f}'
          f' ms, on_trial_complete() {1000 * r["on_trial_complete_s"]["mean"]:.1f} ms mean | load '
          f'{r["load_average_after"]}')


def main():
    args = parse_args()
    print(f'[bench] load average at start: {load_average()} on {os.cpu_count()} CPUs')
    space = Space.default()
    out: Dict[str, Any] = dict(load_average_start=load_average(), cpus=os.cpu_count())
    if not args.skip_storage:
        out['storage'] = run_storage(args, space)
        if len(out['storage']) == 2:
            journal, pg = out['storage']
            print(f'[storage] journal / PostgreSQL throughput: {journal["trials_per_s"] / pg["trials_per_s"]:.2f}x')
    if not args.skip_ray:
        out['ray'] = run_ray(args, space)
        print_ray(out['ray'])
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2, default=str)


if __name__ == '__main__':
    main()
