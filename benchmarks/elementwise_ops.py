"""CPU forward + backward of the searched loss's rewritten elementwise ops against their plain torch spelling.

Each row times the op as the searched terms now compute it and the straightforward form it replaced, in the same
run on the same tensors (a fused FPN run of the demo pairs: batch x 64 channels x 1364 positions, or a 32 x 32
level for the pooling), and checks that both give the same values and gradients.

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
        ('norm_C (times rsqrt) vs divided by sqrt', fused, norm_c,
         lambda x: x / x.pow(2).sum(1, keepdim=True).add(1e-12).sqrt(), 1e-5),
        ('cosine over C vs divided-by-norms form', fused, lambda x: cosine_similarity(x, teacher, dim=1),
         lambda x: ((x / x.pow(2).sum(1, keepdim=True).clamp_min(1e-16).sqrt()) *
                    (teacher / teacher.pow(2).sum(1, keepdim=True).clamp_min(1e-16).sqrt())).sum(1), 1e-5),
        ('scale_r2 (student side) vs max_pool2d', level, scale_r2,
         lambda x: F.max_pool2d(x, 2, 2, ceil_mode=True), 0.0),
    ]


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
