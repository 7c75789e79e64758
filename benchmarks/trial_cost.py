"""Seconds per evaluated candidate of a proxy trial, on the demo RetinaNet pair.

Variants (same candidates, iterations, batch size and proxy subsets for all; every run pays its own setup:
model build, teacher load, dataset build, COCO evaluation):

  (a) the reference release's protocol, emulated with our code: one candidate per run, the teacher recomputed
      every step, and TWO student forwards per step (the detection loss runs the student's own ``extract_feat``;
      the distillation features come from a second one), i.e. ``features_reused`` disabled;
  (b) ours, K=1: one student forward per step (``run_proxy_trial``);
  (c) ours, shared-teacher groups of K candidates (``run_proxy_group``): batch and teacher forward once per step;
  (b+cache), (cK+cache): (b) and (c) at the ``--cache-ks`` group sizes reading the teacher's features from the
      teacher output cache (workers/teacher_cache.py) instead of running the teacher. The cache is built once
      before the timed runs (its build time is reported separately) and is then only opened by every run; the
      table also gives their cost with the build amortised over ``--amortise-trials`` candidate evaluations
      (a search's evaluations share one cache).

Each variant evaluates the same ``--candidates`` genomes (the published RetinaNet formulation, then stage-1
samples of the default space); variants run interleaved (forward then reverse order per repeat) and the
table gives seconds per candidate (median over repeats) and the ratio to (a) measured in the same run.

Teacher output cache probe (``--cache-probe``): time of the teacher forward for one batch vs reading the same
features back from a memory-mapped file, against the time of one training step; it tells whether precomputing
the teacher's features (possible only for proxies without random augmentation) would pay.

    .venv/bin/python benchmarks/trial_cost.py [--device cpu|cuda] [--iterations 8] [--batch-size 4]
        [--ks 2 4] [--cache-ks 1 4] [--amortise-trials 16] [--repeats 2] [--threads 1] [--cache-probe]
        [--json out.json]

On a GPU (``--device cuda``) the table also reports training images per second.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import os.path as osp
import random
import statistics
import sys
import tempfile
import time
from unittest import mock

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--iterations', type=int, default=8)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--train-images', type=int, default=32)
    parser.add_argument('--val-images', type=int, default=8)
    parser.add_argument('--candidates', type=int, default=4, help='genomes evaluated per variant')
    parser.add_argument('--ks', type=int, nargs='+', default=[2, 4], help='group sizes of variant (c)')
    parser.add_argument('--cache-ks', type=int, nargs='*', default=None,
                        help='group sizes run with the teacher cache (1 = variant b); default: 1 and the largest '
                        'of --ks; none to skip')
    parser.add_argument('--amortise-trials', type=int, default=16,
                        help='candidate evaluations the cache build is amortised over in the table')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--teacher-checkpoint', help='default: a randomly initialised teacher (cost does not '
                        'depend on the weights)')
    parser.add_argument('--cache-probe', action='store_true')
    parser.add_argument('--json')
    return parser.parse_args()


ARGS = parse_args()
if ARGS.device == 'cpu':
    os.environ['CUDA_VISIBLE_DEVICES'] = ''   # the proxy runs on a GPU whenever one is visible
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)

from distill_core import distiller as distiller_module  # noqa: E402
from workers.proxy import run_proxy_group, run_proxy_trial  # noqa: E402


@contextlib.contextmanager
def _two_forwards(detector, feats):
    """Replaces ``features_reused``: the student's detection loss runs its own backbone + neck forward."""
    yield


@contextlib.contextmanager
def reference_protocol():
    with mock.patch.object(distiller_module, 'features_reused', _two_forwards):
        yield


def search_config(teacher_checkpoint: str, data_root: str) -> dict:
    return dict(teacher=dict(config='configs/demo/retinanet_teacher.py', checkpoint=teacher_checkpoint),
                student=dict(config='configs/demo/retinanet_student.py'),
                data=dict(data_root=data_root),
                proxy=dict(train_images=ARGS.train_images, val_images=ARGS.val_images, subset_seed=0,
                           iterations=ARGS.iterations, batch_size=ARGS.batch_size, val_batch_size=8,
                           optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4), grad_clip=35.0,
                           inherit_neck_head=True, report_interval=ARGS.iterations, eval_interval=None,
                           reject=dict(check_iterations=0, max_loss=1e30)))


def candidate_genomes(n: int):
    from search.operators import Stage1Ops
    from search.space import Space
    space = Space.default()
    genomes = [space.published['retinanet_r101_r50'].to_json()]
    rng = random.Random(0)
    ops = [Stage1Ops(space, name, 'retinanet') for name in ('global', 'fg_bg')]
    while len(genomes) < n:
        genomes.append(ops[len(genomes) % 2].sample(rng).to_json())
    return genomes[:n]


def prepare(tmp: str):
    from distill_core.shapes import generate_shapes
    data_root = osp.join(tmp, 'shapes')
    generate_shapes(data_root, num_train=ARGS.train_images + ARGS.val_images, num_val=4, size=128, seed=0)
    checkpoint = ARGS.teacher_checkpoint
    if checkpoint is None:
        sys.path.insert(0, osp.join(ROOT, 'tests'))
        from demo_utils import build_teacher_checkpoint
        checkpoint = build_teacher_checkpoint('retinanet', tmp)
    return search_config(osp.abspath(checkpoint), data_root)


CACHED = '+cache'


def with_teacher_cache(cfg: dict, setting) -> dict:
    return dict(cfg, proxy=dict(cfg['proxy'], teacher_cache=setting))


def run_variant(name: str, cfg: dict, genomes, cache_dir: str) -> float:
    """Seconds to evaluate ``genomes`` with variant ``name`` ('a', 'b', 'cK', or either of the last two with
    '+cache')."""
    cached = name.endswith(CACHED)
    name = name[:-len(CACHED)] if cached else name
    cfg = with_teacher_cache(cfg, cached)   # True: read the prebuilt cache; False: the teacher runs every step
    cache = dict(teacher_cache_dir=cache_dir) if cached else {}
    start = time.perf_counter()
    if name in ('a', 'b'):
        context = reference_protocol() if name == 'a' else contextlib.nullcontext()
        with context:
            for genome in genomes:
                run_proxy_trial(cfg, genome, seed=0, base_dir=ROOT, **cache)
    else:
        k = int(name[1:])
        for i in range(0, len(genomes), k):
            results = run_proxy_group(cfg, genomes[i:i + k], [0] * len(genomes[i:i + k]), base_dir=ROOT, **cache)
            failed = [r.failure for r in results if r.failure is not None]
            if failed:
                raise failed[0]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def cache_probe(cfg: dict, tmp: str, repeats: int = 7) -> dict:
    """Teacher forward vs memory-mapped read of its features, and a whole training step, for one batch."""
    import numpy as np

    from workers.settings import check_search_config
    from workers.progress import quiet_mmengine
    from workers.proxy import _Candidate, _autocast, build_distiller
    from workers.proxy_data import ProxyData
    settings = check_search_config(cfg)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    with quiet_mmengine():
        model = build_distiller(cfg, candidate_genomes(1)[0], settings, ROOT).to(device)
    model.train()
    data = ProxyData(cfg, settings, ROOT)
    batch = model.data_preprocessor(next(data.train_batches(0)), True)
    candidate = _Candidate(None, 0, None, model, settings)
    autocast = _autocast(settings, device)

    def timed(fn):
        times = []
        for _ in range(repeats):
            if device == 'cuda':
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == 'cuda':
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    teacher = model.teacher_forward(batch['inputs'])
    paths = []
    for level, feat in enumerate(teacher.feats):   # what a cache would hold: one file per level
        path = osp.join(tmp, f'teacher_fpn{level}.npy')
        array = np.lib.format.open_memmap(path, mode='w+', dtype=np.float32, shape=tuple(feat.shape))
        array[:] = feat.float().cpu().numpy()
        array.flush()
        paths.append(path)

    def read_cached():
        feats = [torch.from_numpy(np.array(np.load(p, mmap_mode='r'))).to(device) for p in paths]
        return feats

    with autocast:
        forward_ms = timed(lambda: model.teacher_forward(batch['inputs']))
    read_ms = timed(read_cached)
    step_ms = timed(lambda: candidate.train_step(batch, teacher, 1, settings, autocast))
    return dict(teacher_forward_ms=forward_ms, memmap_read_ms=read_ms, student_step_ms=step_ms,
                feature_bytes=int(sum(f.numel() * 4 for f in teacher.feats)))


def build_teacher_cache(cfg: dict, cache_dir: str) -> float:
    """Build the search's teacher cache once (what the first trial needing it does); seconds of the build itself
    (teacher forwards of every proxy training image in both flip states, written to the memory-mapped files)."""
    from workers.settings import check_search_config
    from workers.progress import quiet_mmengine
    from workers.proxy import build_distiller
    from workers.proxy_data import ProxyData
    from workers.teacher_cache import open_teacher_cache
    cfg = with_teacher_cache(cfg, True)
    settings = check_search_config(cfg)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    with quiet_mmengine():
        model = build_distiller(cfg, None, settings, ROOT).to(device)
        data = ProxyData(cfg, settings, ROOT)
    model.train()
    cache, reason = open_teacher_cache(cfg, settings, data, model, cache_dir, 1, ROOT)
    assert cache is not None and cache.built_here, reason
    cache.close()
    print(f'[trial_cost] teacher cache: {reason}', flush=True)
    return cache.build_seconds


def main():
    cache_ks = ARGS.cache_ks if ARGS.cache_ks is not None else sorted({1, max(ARGS.ks)})
    variants = (['a', 'b'] + [f'c{k}' for k in ARGS.ks] +
                [('b' if k == 1 else f'c{k}') + CACHED for k in cache_ks])
    times = {v: [] for v in variants}
    load = os.getloadavg()
    build_seconds = None
    with tempfile.TemporaryDirectory() as tmp:
        cfg = prepare(tmp)
        cache_dir = osp.join(tmp, 'teacher_cache')
        genomes = candidate_genomes(ARGS.candidates)
        run_variant('b', cfg, genomes[:1], cache_dir)   # warm-up: imports, registries, file cache
        if cache_ks:
            build_seconds = build_teacher_cache(cfg, cache_dir)
        for repeat in range(ARGS.repeats):
            for name in (variants if repeat % 2 == 0 else variants[::-1]):
                seconds = run_variant(name, cfg, genomes, cache_dir)
                times[name].append(seconds)
                print(f'[trial_cost] repeat {repeat} variant {name}: {seconds:.1f} s for {len(genomes)} candidates',
                      flush=True)
        probe = cache_probe(cfg, tmp) if ARGS.cache_probe else None
    load_after = os.getloadavg()
    labels = dict(a='(a) reference protocol: 2 student forwards, teacher per candidate',
                  b='(b) ours, K=1')
    per_candidate = {v: statistics.median(times[v]) / ARGS.candidates for v in variants}
    images = ARGS.iterations * ARGS.batch_size
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f'CPU, {ARGS.threads} thread(s)'
    print(f'\ndevice: {device}; {ARGS.candidates} candidates, {ARGS.iterations} iterations x batch '
          f'{ARGS.batch_size}, {ARGS.train_images}/{ARGS.val_images} proxy images; median of {ARGS.repeats}; '
          f'load average before {load[0]:.2f}, after {load_after[0]:.2f}')
    amortised = {v: per_candidate[v] + (build_seconds / ARGS.amortise_trials if v.endswith(CACHED) else 0.0)
                 for v in variants}
    if build_seconds is not None:
        print(f'teacher cache build: {build_seconds:.2f} s ({ARGS.train_images} images x 2 flips), timed apart; '
              f'"amortised" adds build / {ARGS.amortise_trials} candidate evaluations (--amortise-trials) to the '
              'cached variants')
    print('| variant | s / candidate | ratio vs (a) | amortised s / candidate | amortised ratio vs (a) | '
          'train images / s |')
    print('|---|---|---|---|---|---|')
    for v in variants:
        base = v[:-len(CACHED)] if v.endswith(CACHED) else v
        label = labels.get(base, f'(c) ours, shared teacher K={base[1:]}')
        if v.endswith(CACHED):
            label += ', teacher cache'
        print(f'| {label} | {per_candidate[v]:.2f} | {per_candidate[v] / per_candidate["a"]:.2f}x | '
              f'{amortised[v]:.2f} | {amortised[v] / amortised["a"]:.2f}x | {images / per_candidate[v]:.1f} |')
    if probe:
        print(f'\nteacher cache probe (batch {ARGS.batch_size}): teacher forward {probe["teacher_forward_ms"]:.1f} ms, '
              f'memmap read {probe["memmap_read_ms"]:.2f} ms ({probe["feature_bytes"] / 1e6:.2f} MB), '
              f'student step {probe["student_step_ms"]:.1f} ms')
    if ARGS.json:
        with open(ARGS.json, 'w') as f:
            json.dump(dict(args=vars(ARGS), device=device, load=[load, load_after], seconds=times,
                           per_candidate=per_candidate, cache_build_seconds=build_seconds,
                           amortised_per_candidate=amortised, probe=probe), f, indent=1)


if __name__ == '__main__':
    main()
