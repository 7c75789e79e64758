"""Cost of the searched distillation terms, and of the vectorised FG/BG mask builder.

1. Per demo pair: time of the distillation terms (forward + backward) as a fraction of the student's own
   training step, at the demo configs' training batch size (8: what full training and the proxy trials run;
   ``--batch-size`` to change it), for the published DetKDS formulations that apply to the family and for the
   slowest op combination of the default space (slowest op per slot and slowest distance, measured here, every
   input on). Measured as the difference of two distiller steps (with the searched loss / without distillation
   losses), so the backward through the student that both share is not counted twice; interleaved, median of
   N, the steps cycling through ``--batches`` distinct batches (the cost follows each batch's GT boxes and
   sampled RoIs), both steps of a pair on the same batch. The student's own step is timed in the same rounds
   (denominator and numerator under the same machine load). The process runs with the CPU allocator settings of
   trial workers and full training (``workers/allocator.py``; ``DETKDS_MALLOC_TUNING=0`` for glibc's defaults).
2. Per demo pair: the same difference for each published method's demo config (``configs/distillers/<method>/
   <method>_demo_<family>.py``: FGD, MGD, PKD, GKD, Global-Knowledge, where one exists for the family): the
   method's per-step cost relative to the student step. Hook work outside the step (Global-Knowledge's
   prototype generation every ``interval`` iterations) is not included.
3. The vectorised mask builder against a straightforward per-box loop of the same rule, at 5, 50 and 200 boxes
   per image on COCO-sized maps (batch 2, 800 x 1216, strides 8..128), asserting equal masks: one
   ``fg_bg_masks`` call per level, and ``fg_bg_masks_levels`` for all levels at once (what the fg/bg input uses;
   the 5x target applies to it).

Targets: every published formulation under 15 % of the student step; mask builder >= 5x faster at 50 boxes.

    .venv/bin/python benchmarks/loss_overhead.py [--families retinanet fcos] [--repeats 15] [--batch-size 2]
        [--batches 4] [--parts masks overhead methods] [--per-term] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from typing import Optional, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import distill_core  # noqa: E402,F401
from distill_core import DISTANCES, TRANSFORMS, Genome  # noqa: E402
from distill_core.checkpoint import save_atomic  # noqa: E402
from distill_core.distiller import DetectionDistiller  # noqa: E402
from distill_core.genome import KNOWLEDGE_INPUTS, OpSpec, Term  # noqa: E402
from distill_core.masks import fg_bg_masks, fg_bg_masks_levels, fg_bg_masks_per_box_loop  # noqa: E402
from distill_core.shapes import generate_shapes  # noqa: E402
from distill_core.transforms import cascade_pair  # noqa: E402
from search.space import Space  # noqa: E402
from workers.allocator import tune_cpu_allocator  # noqa: E402
from workers.full_training import use_data_root  # noqa: E402

FAMILIES = ('retinanet', 'faster_rcnn', 'fcos', 'gfl', 'reppoints')
PUBLISHED = {'retinanet': ('retinanet_r101_r50', 'retinanet_x101_r50'), 'faster_rcnn': ('faster_rcnn_r101_r50',),
             'fcos': ('fcos_r101_r50',), 'gfl': ('gfl_r101_r50',), 'reppoints': ('reppoints_x101_r50',)}
METHODS = ('fgd', 'mgd', 'pkd', 'gkd', 'gkd_global')
TARGET_OVERHEAD, TARGET_MASK_SPEEDUP = 0.15, 5.0


def demo_config(name: str) -> str:
    return osp.join(ROOT, 'configs', 'demo', f'{name}.py')


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------ slowest combination
def _op_time(ops, distance, x: torch.Tensor, repeats: int = 5) -> float:
    def run():
        s = x.clone().requires_grad_()
        a, b = cascade_pair(ops, s, x)
        distance(a, b).backward()
    return median_time(run, repeats, warmup=1)


def slowest_genome(space: Space, family: str) -> Genome:
    """Every input on, each with its slowest op per slot and slowest valid distance (timed on a P2-sized map)."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 32, 32)
    l2 = DISTANCES.get('l2')()
    terms = []
    for input in space.inputs:
        transforms = []
        for table in space.slot_tables(input):
            timed = {name: _op_time([TRANSFORMS.get(name)()], l2, x) for name in table}
            transforms.append(OpSpec(max(timed, key=timed.get)))
        ops = [op.build('transform') for op in transforms]
        if KNOWLEDGE_INPUTS[input] == 'localization':
            distance = 'giou' if 'giou' in space.distances_for(input, transforms, family) else \
                space.distances_for(input, transforms, family)[0]
        else:
            timed = {name: _op_time(ops, DISTANCES.get(name)(), x)
                     for name in space.distances_for(input, transforms, family)}
            distance = max(timed, key=timed.get)
        terms.append(Term(input, True, tuple(transforms), OpSpec(distance), 1.0))
    return Genome(tuple(terms))


# ------------------------------------------------------------------------------------ loss overhead
def batches_for(model, family: str, data_root: str, batch_size: Optional[int], count: int):
    """The first ``count`` preprocessed training batches of the demo student config (its own batch size unless
    given): the terms' cost depends on a batch's GT boxes and sampled RoIs, so steps cycle through several."""
    cfg = use_data_root(Config.fromfile(demo_config(f'{family}_student')), data_root)
    loader_cfg = cfg.train_dataloader
    loader_cfg.batch_size = batch_size or loader_cfg.batch_size
    loader_cfg.num_workers, loader_cfg.persistent_workers = 0, False
    batches = []
    for data in Runner.build_dataloader(loader_cfg, seed=0):
        data = model.data_preprocessor(data, training=True)
        batches.append((data['inputs'], data['data_samples']))
        if len(batches) == count:
            break
    return batches


def step_fn(model, batches):
    """A training step; its i-th call takes batch i mod len(batches) (interleaved steps stay on one batch)."""
    calls = [0]

    def step():
        inputs, samples = batches[calls[0] % len(batches)]
        calls[0] += 1
        model.zero_grad(set_to_none=True)
        losses = model.loss(inputs, samples)
        total = sum(v.sum() if torch.is_tensor(v) else sum(x.sum() for x in v)
                    for k, v in losses.items() if 'loss' in k)
        total.backward()
    return step


def distiller(family: str, checkpoint: str, genome=None) -> DetectionDistiller:
    losses = [] if genome is None else [dict(name='searched', loss=dict(type='SearchedDistillLoss',
                                                                          genome=genome.to_json()))]
    torch.manual_seed(0)
    model = DetectionDistiller(teacher=dict(config=demo_config(f'{family}_teacher'), checkpoint=checkpoint),
                               student=dict(config=demo_config(f'{family}_student')), distill_losses=losses)
    model.init_weights()
    return model.train()


def method_distiller(config_path: str, checkpoint: str) -> DetectionDistiller:
    """The distiller of a published method's demo config, its teacher weights taken from ``checkpoint``."""
    model_cfg = Config.fromfile(config_path).model
    model_cfg.teacher.checkpoint = checkpoint
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model.train()


def added_step_time(student_step, base_step, with_step, repeats: int) -> Tuple[float, float]:
    """(median over interleaved pairs of (step with the losses) - (step without), never negative; median of the
    student's own step), the three timed in the same rounds so that drifts in machine load hit numerator and
    denominator alike."""
    for fn in (student_step, base_step, with_step):   # warm-up
        fn()
    diffs, student_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        student_step()
        t1 = time.perf_counter()
        base_step()
        t2 = time.perf_counter()
        with_step()
        t3 = time.perf_counter()
        student_times.append(t1 - t0)
        diffs.append((t3 - t2) - (t2 - t1))
    return max(statistics.median(diffs), 0.0), statistics.median(student_times)


class DemoPair:
    """One demo pair's fixtures: a random teacher checkpoint, the timed batches, the student step and the distiller
    without distillation losses (what every variant is compared with)."""

    def __init__(self, family: str, data_root: str, work: str, repeats: int, batch_size: Optional[int],
                 num_batches: int):
        self.family, self.repeats = family, repeats
        torch.manual_seed(0)
        teacher = MODELS.build(Config.fromfile(demo_config(f'{family}_teacher')).model)
        teacher.init_weights()
        self.checkpoint = osp.join(work, f'{family}_teacher.pth')
        save_atomic({'state_dict': teacher.state_dict(), 'meta': {}}, self.checkpoint)
        self.student = MODELS.build(Config.fromfile(demo_config(f'{family}_student')).model)
        self.student.init_weights()
        self.student.train()
        self.batches = batches_for(self.student, family, data_root, batch_size, num_batches)
        self.batch_size = len(self.batches[0][1])
        self.base_model = distiller(family, self.checkpoint)

    def row(self, model, **fields):
        # fresh steps: the three steps of a round take the same batch
        added, student = added_step_time(step_fn(self.student, self.batches), step_fn(self.base_model, self.batches),
                                         step_fn(model, self.batches), self.repeats)
        return dict(family=self.family, batch_size=self.batch_size, student_step_ms=student * 1e3,
                    terms_ms=added * 1e3, ratio=added / student, **fields)


def overhead_rows(pair: DemoPair, space: Space, per_term: bool = False):
    candidates = []
    for name in PUBLISHED[pair.family]:
        genome = space.published[name]
        candidates.append((f'published {name}', genome, True))
        if per_term and len(genome.active_terms) > 1:   # what each term costs on its own
            candidates += [(f'{name}: {t.input} only', Genome((t,)), False) for t in genome.active_terms]
    candidates.append(('slowest combination', slowest_genome(space, pair.family), False))
    rows = []
    for label, genome, has_target in candidates:
        row = pair.row(distiller(pair.family, pair.checkpoint, genome), genome=label, formula=genome.formula())
        row['target_met'] = row['ratio'] < TARGET_OVERHEAD if has_target else None
        rows.append(row)
    return rows


def method_rows(pair: DemoPair):
    rows = []
    for method in METHODS:
        path = osp.join(ROOT, 'configs', 'distillers', method, f'{method}_demo_{pair.family}.py')
        if osp.isfile(path):
            rows.append(pair.row(method_distiller(path, pair.checkpoint), method=method,
                                 config=osp.relpath(path, ROOT)))
    return rows


# ------------------------------------------------------------------------------------ masks
def mask_rows(repeats: int):
    g = torch.Generator().manual_seed(0)
    shapes = [(800, 1216), (768, 1180)]
    levels = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    rows = []
    for count in (5, 50, 200):
        boxes = []
        for h, w in shapes:
            # COCO-like sizes: side log-uniform in 8 px .. 40 % of the image
            side = torch.exp(torch.empty(count, 2).uniform_(0, 1, generator=g) * torch.log(torch.tensor(0.4 * h / 8)))
            side = side * 8
            xy = torch.rand(count, 2, generator=g) * torch.tensor([w, h])
            boxes.append(torch.cat([xy, torch.minimum(xy + side, torch.tensor([float(w), float(h)]))], 1))
        for hw in levels:
            fast, slow = fg_bg_masks(boxes, shapes, hw), fg_bg_masks_per_box_loop(boxes, shapes, hw)
            assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1]), 'masks differ'
        for hw, together in zip(levels, fg_bg_masks_levels(boxes, shapes, levels)):
            slow = fg_bg_masks_per_box_loop(boxes, shapes, hw)
            assert torch.equal(together[0], slow[0]) and torch.equal(together[1], slow[1]), 'masks differ'
        vec = median_time(lambda: [fg_bg_masks(boxes, shapes, hw) for hw in levels], repeats)
        joint = median_time(lambda: fg_bg_masks_levels(boxes, shapes, levels), repeats)
        loop = median_time(lambda: [fg_bg_masks_per_box_loop(boxes, shapes, hw) for hw in levels], repeats)
        rows.append(dict(boxes_per_image=count, vectorised_ms=vec * 1e3, all_levels_ms=joint * 1e3,
                         loop_ms=loop * 1e3, speedup=loop / vec, speedup_all_levels=loop / joint,
                         target_met=(loop / joint >= TARGET_MASK_SPEEDUP) if count == 50 else None))
    return rows


def setup_registries():
    register_all_modules(init_default_scope=True)
    distill_core.register_all_modules()   # the distiller, SearchedDistillLoss and the ops
    MMLogger.get_current_instance().setLevel(logging.WARNING)   # no per-parameter init_weights lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--families', nargs='+', default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--batches', type=int, default=4,
                        help='distinct training batches the timed steps cycle through (their boxes and RoIs differ)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help="images per step (default: the demo config's training batch size, 8)")
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (1: stable timings)')
    parser.add_argument('--data-root', default=None, help='shapes data (generated in a temp dir if absent)')
    parser.add_argument('--parts', nargs='+', default=['masks', 'overhead', 'methods'],
                        choices=['masks', 'overhead', 'methods'])
    parser.add_argument('--per-term', action='store_true',
                        help='also time each term of a multi-term published formulation on its own')
    parser.add_argument('--json', default=None, help='also write the rows here')
    args = parser.parse_args(argv)
    tune_cpu_allocator()   # what trial workers and full training run with (benchmarks/allocator.py)
    torch.set_num_threads(args.threads)
    setup_registries()
    space = Space.default()

    results = {}
    if 'masks' in args.parts:
        print_masks(results, args.repeats)
    if {'overhead', 'methods'} & set(args.parts):
        print_pairs(results, args, space)
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)


def print_masks(results, repeats):
    results['masks'] = mask_rows(repeats)
    print('| boxes/image | per-box loop ms | vectorised, one call per level ms | speed-up | vectorised, all 5 '
          'levels in one call ms (what the loss uses) | speed-up | >= 5x |')
    print('|---|---|---|---|---|---|---|')
    for r in results['masks']:
        met = '' if r['target_met'] is None else ('yes' if r['target_met'] else 'NO')
        print(f"| {r['boxes_per_image']} | {r['loop_ms']:.2f} | {r['vectorised_ms']:.2f} | {r['speedup']:.1f}x | "
              f"{r['all_levels_ms']:.2f} | {r['speedup_all_levels']:.1f}x | {met} |")


def print_pairs(results, args, space):
    os.chdir(ROOT)   # the method configs name the demo configs relative to the repository root
    with tempfile.TemporaryDirectory() as work:
        data_root = args.data_root
        if data_root is None:
            data_root = osp.join(work, 'shapes')
            generate_shapes(data_root, num_train=32, num_val=3, size=128, seed=0)
        pairs = [DemoPair(family, data_root, work, args.repeats, args.batch_size, args.batches)
                 for family in args.families]
        if 'overhead' in args.parts:
            results['overhead'] = []
            print('\n| pair | batch | distiller | formula | student step ms | terms ms | ratio | < 15 % |')
            print('|---|---|---|---|---|---|---|---|')
            for pair in pairs:
                for r in overhead_rows(pair, space, args.per_term):
                    results['overhead'].append(r)
                    met = '' if r['target_met'] is None else ('yes' if r['target_met'] else 'NO')
                    formula = r['formula'].replace('|', '\\|')
                    print(f"| {r['family']} | {r['batch_size']} | {r['genome']} | `{formula}` | "
                          f"{r['student_step_ms']:.1f} | {r['terms_ms']:.1f} | {100 * r['ratio']:.1f} % | {met} |",
                          flush=True)
        if 'methods' in args.parts:
            results['methods'] = []
            print('\n| pair | batch | method | config | student step ms | method ms | ratio |')
            print('|---|---|---|---|---|---|---|')
            for pair in pairs:
                for r in method_rows(pair):
                    results['methods'].append(r)
                    print(f"| {r['family']} | {r['batch_size']} | {r['method']} | `{r['config']}` | "
                          f"{r['student_step_ms']:.1f} | {r['terms_ms']:.1f} | {100 * r['ratio']:.1f} % |", flush=True)


if __name__ == '__main__':
    main()
