"""RoIAlign on CPU: ``distill_core.roi_align.RoIAlign`` (vectorised) against ``mmcv.ops.roi_align`` (mmcv's CPU
kernel), at the demo's batch-8, 64-channel FPN maps, asserting equal values and gradients.

Per row: K RoIs (random boxes of 8-64 px on 128 px images) on one level, as the instance input uses them (7 x 7,
sampling_ratio 2; the teacher's map forward only, the student's forward + backward, both sides sharing the
vectorised op's sampling tables). Median of ``--repeats`` calls each, the two implementations interleaved; the
ratio is mmcv / vectorised. It sets the rule ``vectorised_pays`` (when it says no, ``RoIAlign`` calls mmcv's
kernel); the last column says what the rule picks.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/roi_align.py [--repeats 30] [--json out.json]
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from mmcv.ops import roi_align as mmcv_roi_align  # noqa: E402

from distill_core import roi_align as vectorised  # noqa: E402
from markdown_table import MarkdownTable  # noqa: E402
from workers.allocator import tune_cpu_allocator  # noqa: E402


def random_rois(k: int, images: int, generator: torch.Generator) -> torch.Tensor:
    size = 8 + 56 * torch.rand(k, 2, generator=generator)
    corner = (128 - size) * torch.rand(k, 2, generator=generator)
    image = torch.randint(0, images, (k, 1), generator=generator).float()
    return torch.cat([image, corner, corner + size], 1)


def interleaved(fns, repeats: int):
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [1e3 * statistics.median(t) for t in times]


def instance_row(k, hw, stride, repeats, generator):
    student = torch.randn(8, 64, hw, hw, generator=generator).requires_grad_()
    teacher = torch.randn(8, 64, hw, hw, generator=generator)
    rois = random_rois(k, 8, generator)
    args = ((7, 7), 1.0 / stride, 2)
    grad = torch.randn(k, 64, 7, 7, generator=generator)

    def mmcv_pair():
        mmcv_roi_align(teacher, rois, *args, 'avg', True)
        mmcv_roi_align(student, rois, *args, 'avg', True).backward(grad)

    def ours_pair():
        op = vectorised.RoIAlign(rois, *args, implementation='vectorised')   # what the rule is chosen from
        with torch.no_grad():
            op(teacher)
        op(student).backward(grad)

    check(student, teacher, rois, args, grad)
    return interleaved([mmcv_pair, ours_pair], repeats)


def check(student, teacher, rois, args, grad):
    op = vectorised.RoIAlign(rois, *args, implementation='vectorised')
    reference = mmcv_roi_align(teacher, rois, *args, 'avg', True)
    assert torch.allclose(op(teacher), reference, atol=1e-5), 'values differ from mmcv'
    student.grad = None
    mmcv_roi_align(student, rois, *args, 'avg', True).backward(grad)
    expected, student.grad = student.grad, None
    op(student).backward(grad)
    assert torch.allclose(student.grad, expected, atol=1e-5), 'gradients differ from mmcv'
    student.grad = None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--json', default=None)
    args = parser.parse_args(argv)
    tune_cpu_allocator()   # as trial workers and full training run
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    table = MarkdownTable(['map', 'RoIs', 'mmcv ms', 'vectorised ms', 'mmcv / vectorised', 'RoIAlign picks'])
    for hw, stride in ((32, 4), (16, 8), (8, 16)):
        for k in (1, 2, 4, 6, 8, 16, 32):
            mmcv_ms, ours_ms = instance_row(k, hw, stride, args.repeats, generator)
            picks = 'vectorised' if vectorised.vectorised_pays(k, (8, 64, hw, hw)) else 'mmcv'
            table.add([f'8x64x{hw}x{hw}', str(k), f'{mmcv_ms:.3f}', f'{ours_ms:.3f}', f'{mmcv_ms / ours_ms:.2f}x',
                       picks], map=f'8x64x{hw}x{hw}', rois=k, mmcv_ms=mmcv_ms, vectorised_ms=ours_ms,
                      ratio=mmcv_ms / ours_ms, picks=picks)
    table.write_json(args.json)

if __name__ == '__main__':
    main()
