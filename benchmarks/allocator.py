"""Training-step time with and without the CPU allocator settings of ``workers/allocator.py``.

glibc's malloc settings are process-wide and read before the first large allocation, so each measurement is a
child process (``DETKDS_MALLOC_TUNING=0`` or ``1``); children alternate (off, on, on, off, ...) so that drifts
in machine load hit both alike. Each child builds the demo pair's distiller with the published DetKDS
formulation (``loss_overhead.py``'s fixtures: random teacher weights, the demo config's training batch, steps
cycling through ``--batches`` batches) and reports the median step time and minor page faults per step of
(1) the student alone and (2) the distiller. The table gives medians over children and the ratio off / on.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/allocator.py [--families faster_rcnn retinanet] [--children 4]
        [--steps 12] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))

from markdown_table import MarkdownTable  # noqa: E402


def child(family: str, steps: int, batches: int) -> dict:
    """One process's measurement; the allocator is tuned (or not) before anything large is allocated."""
    from workers.allocator import tune_cpu_allocator
    tuned = tune_cpu_allocator()
    import torch
    torch.set_num_threads(1)
    import loss_overhead as lo
    from distill_core.shapes import generate_shapes
    from search.space import Space
    lo.setup_registries()
    genome = Space.default().published[lo.PUBLISHED[family][0]]
    with tempfile.TemporaryDirectory() as work:
        data_root = osp.join(work, 'shapes')
        generate_shapes(data_root, num_train=32, num_val=3, size=128, seed=0)
        pair = lo.DemoPair(family, data_root, work, 1, None, batches)
        student_step = lo.step_fn(pair.student, pair.batches)
        distiller_step = lo.step_fn(lo.distiller(family, pair.checkpoint, genome), pair.batches)
        return dict(tuned=tuned, student=_measure(student_step, steps), distiller=_measure(distiller_step, steps))


def _measure(step, steps: int) -> dict:
    for _ in range(2):
        step()
    times, faults = [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return dict(step_ms=1e3 * statistics.median(times), faults=statistics.median(faults))


def run_child(family: str, tuned: bool, args) -> dict:
    env = dict(os.environ, DETKDS_MALLOC_TUNING='1' if tuned else '0', OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, osp.abspath(__file__), '--child', family, '--steps', str(args.steps),
                          '--batches', str(args.batches)], env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f'child ({family}, tuned={tuned}) failed:\n{out.stderr[-3000:]}')
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result['tuned'] != tuned:
        raise SystemExit(f'child ({family}) asked for tuned={tuned} but got {result["tuned"]}')
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--families', nargs='+', default=['faster_rcnn', 'retinanet'],
                        help="demo pairs (loss_overhead.py's FAMILIES)")
    parser.add_argument('--children', type=int, default=4, help='processes per setting and family')
    parser.add_argument('--steps', type=int, default=12, help='timed steps per process')
    parser.add_argument('--batches', type=int, default=4)
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--json', default=None)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.batches)))
        return
    # imported here, not at the top: a child must tune its allocator before loss_overhead loads torch
    from loss_overhead import FAMILIES
    unknown = sorted(set(args.families) - set(FAMILIES))
    if unknown:
        parser.error(f'unknown --families {unknown}; known: {list(FAMILIES)}')
    table = MarkdownTable(['pair', 'step', 'default ms', 'tuned ms', 'default / tuned',
                           'page faults per step (default / tuned)'])
    for family in args.families:
        runs = {False: [], True: []}
        for i in range(args.children):
            for tuned in ((False, True) if i % 2 == 0 else (True, False)):
                runs[tuned].append(run_child(family, tuned, args))
        for step in ('student', 'distiller'):
            off = statistics.median(r[step]['step_ms'] for r in runs[False])
            on = statistics.median(r[step]['step_ms'] for r in runs[True])
            faults = [statistics.median(r[step]['faults'] for r in runs[t]) for t in (False, True)]
            table.add([family, step, f'{off:.1f}', f'{on:.1f}', f'{off / on:.3f}x', f'{faults[0]:.0f} / {faults[1]:.0f}'],
                      family=family, step=step, default_ms=off, tuned_ms=on, ratio=off / on,
                      faults_default=faults[0], faults_tuned=faults[1])
    table.write_json(args.json)

if __name__ == '__main__':
    main()
