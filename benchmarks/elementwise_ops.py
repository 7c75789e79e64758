"""CPU forward + backward of the searched loss's rewritten elementwise ops against their plain torch spelling.

Each row times the op as the searched terms now compute it and the straightforward form it replaced, in the same
run on the same tensors (a fused FPN run of the demo pairs: batch x 64 channels x 1364 positions, or a 32 x 32
level for the pooling), and checks that both give the same values and gradients. The first row is a whole
part of a term: the fg part of the Faster R-CNN formulation's fg/bg term, from the FPN levels to its value.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/elementwise_ops.py [--batch 2 8] [--repeats 200]
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from distill_core import TRANSFORMS  # noqa: E402
from distill_core.distances import cosine_similarity  # noqa: E402
from distill_core.genome import OpSpec, Term  # noqa: E402
from distill_core.searched_loss import SearchedTerm  # noqa: E402

LEVELS = ((32, 32), (16, 16), (8, 8), (4, 4), (2, 2))   # the demo maps' FPN levels (1364 positions)


def fwd_bwd_ms(new, old, x: torch.Tensor, repeats: int):
    """Median ms of ``fn(x)`` plus the backward of a fixed random weighting of its output, for ``new`` and ``old``
    interleaved (so that allocator and cache warm-up and machine drift hit both alike)."""
    weight = torch.randn_like(new(x))
    times = {new: [], old: []}
    for i in range(repeats + 20):
        for fn in (new, old):
            start = time.perf_counter()
            (fn(x) * weight).sum().backward()
            if i >= 20:   # warm-up
                times[fn].append(time.perf_counter() - start)
    return statistics.median(times[new]) * 1e3, statistics.median(times[old]) * 1e3


def same_value_and_grad(new, old, x: torch.Tensor, rtol: float) -> bool:
    a, b = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    out_a, out_b = new(a), old(b)
    weight = torch.randn_like(out_a)
    (out_a * weight).sum().backward()
    (out_b * weight).sum().backward()
    return torch.allclose(out_a, out_b, rtol=rtol, atol=1e-6) and torch.allclose(a.grad, b.grad, rtol=rtol,
                                                                                   atol=1e-6)


def rows(batch: int):
    g = torch.Generator().manual_seed(0)
    fused = torch.randn(batch, 64, 1364, generator=g).requires_grad_()
    teacher = torch.randn(batch, 64, 1364, generator=g)
    level = torch.randn(batch, 64, 32, 32, generator=g).requires_grad_()
    norm_c = TRANSFORMS.build(dict(type='norm_C'))
    scale_r2 = TRANSFORMS.build(dict(type='scale_r2'))
    return [
        ('fg part tail: GT weights and random mask folded into one factor, per-position totals dotted with the '
         'level weights vs a multiply per factor and a weighted sum', fused, *fg_part(teacher, g), 1e-5),
        ('norm_C (times rsqrt) vs divided by sqrt', fused, norm_c,
         lambda x: x / x.pow(2).sum(1, keepdim=True).add(1e-12).sqrt(), 1e-5),
        ('cosine over C vs divided-by-norms form', fused, lambda x: cosine_similarity(x, teacher, dim=1),
         lambda x: ((x / x.pow(2).sum(1, keepdim=True).clamp_min(1e-16).sqrt()) *
                    (teacher / teacher.pow(2).sum(1, keepdim=True).clamp_min(1e-16).sqrt())).sum(1), 1e-5),
        ('scale_r2 (student side) vs max_pool2d', level, scale_r2,
         lambda x: F.max_pool2d(x, 2, 2, ceil_mode=True), 0.0),
    ]


def fg_part(teacher: torch.Tensor, g: torch.Generator):
    """The fg part of the Faster R-CNN formulation's fg/bg term (mask -> no -> norm_C, l1) on the fused levels:
    as ``SearchedTerm`` computes it, and as it did before (both draw the same masks: the seed is reset)."""
    n = teacher.shape[0]
    term = SearchedTerm(Term('fg_bg', True, (OpSpec('mask'), OpSpec('no'), OpSpec('norm_C')), OpSpec('l1'), 1.0))
    gt_weights = [torch.rand(n, 1, h, w, generator=g) for h, w in LEVELS]
    sizes = [h * w for h, w in LEVELS]
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    def levels(x):
        return [x[..., a:b].reshape(n, x.shape[1], h, w) for a, b, (h, w) in zip(bounds, bounds[1:], LEVELS)]

    def now(x):
        torch.manual_seed(0)
        return term._fused_value(list(zip(levels(x), levels(teacher))), gt_weights, None)

    def before(x):
        torch.manual_seed(0)
        s = torch.cat([m.flatten(2) for m in levels(x)], 2)
        t = torch.cat([m.flatten(2) for m in levels(teacher)], 2)
        weight = torch.cat([m.flatten(2) for m in gt_weights], 2)
        s, t = s * weight, t * weight
        keep = (torch.cat([torch.rand((n, 1, size)) for size in sizes], 2) >= 0.65).float()
        s, t = s * keep, t * keep
        s = s * s.pow(2).sum(1, keepdim=True).add(1e-12).rsqrt()
        t = t * t.pow(2).sum(1, keepdim=True).add(1e-12).rsqrt()
        values = (s - t).abs()
        rows = values.numel() // values.shape[-1]
        return (values * torch.cat([values.new_full((size,), 1.0 / (rows * size)) for size in sizes])).sum()
    return now, before


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch', type=int, nargs='+', default=[2, 8])
    parser.add_argument('--repeats', type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print('| batch | op | now ms | before ms | speed-up | same values and gradients |')
    print('|---|---|---|---|---|---|')
    for batch in args.batch:
        for name, x, new, old, rtol in rows(batch):
            now, before = fwd_bwd_ms(new, old, x, args.repeats)
            same = same_value_and_grad(new, old, x, rtol)
            print(f'| {batch} | {name} | {now:.3f} | {before:.3f} | {before / now:.2f}x | {"yes" if same else "NO"} |',
                  flush=True)


if __name__ == '__main__':
    main()
