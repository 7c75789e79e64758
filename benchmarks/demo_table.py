"""The published distillers on one demo pair: bbox AP, AP50, AP75 of the teacher, the student alone and
the student trained with each method, all on the same full demo schedule (the student config's).

Rows: teacher; student alone; the student inheriting the teacher's neck and head with no distillation loss
(the control for every method config that inherits); student + FGD / MGD / PKD / GKD / Global-Knowledge / CrossKD /
BCKD (every ``configs/distillers/<method>/<method>_demo_<family>.py`` that exists) and the DetKDS searched distillers
shipped for the family (``configs/distillers/detkds/detkds_demo_*``, one per published COCO pair).
Long: about 10 trainings of 600-1200 iterations on CPU. Reuses a trained teacher when its checkpoint exists.

    .venv/bin/python benchmarks/demo_table.py [--family retinanet] [--work-dir work_dirs/demo_table]
        [--data-root data/shapes] [--methods fgd mgd ...] [--teacher CKPT] [--json out.json]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmengine.config import Config  # noqa: E402

from workers.full_training import test, train  # noqa: E402
from workers.prepare import ensure_backbone  # noqa: E402

METHODS = ('fgd', 'mgd', 'pkd', 'gkd', 'gkd_global', 'crosskd', 'bckd')
METRICS = (('AP', 'coco/bbox_mAP'), ('AP50', 'coco/bbox_mAP_50'), ('AP75', 'coco/bbox_mAP_75'))
DETKDS_FAMILY = {'retinanet': 'retinanet_', 'faster_rcnn': 'faster_rcnn_', 'fcos': 'fcos_', 'gfl': 'gfl_',
                 'reppoints': 'reppoints_'}


def rows_for(family: str, methods) -> list:
    """(row name, config path, needs the teacher) in table order."""
    rows = [('teacher', f'configs/demo/{family}_teacher.py', False),
            ('student alone', f'configs/demo/{family}_student.py', False)]
    inherit_only = f'configs/demo/_base_/distill_{family}.py'   # the distiller with no distillation loss:
    if osp.isfile(osp.join(ROOT, inherit_only)):                  # separates what inheriting the teacher's
        rows.append(('student + inherited neck/head only', inherit_only, True))   # neck/head gives
    for method in methods:
        path = f'configs/distillers/{method}/{method}_demo_{family}.py'
        if osp.isfile(osp.join(ROOT, path)):
            rows.append((f'student + {method}', path, True))
    for path in sorted(glob.glob(osp.join(ROOT, 'configs/distillers/detkds',
                                          f'detkds_demo_{DETKDS_FAMILY[family]}*.py'))):
        name = osp.basename(path)[len('detkds_demo_'):-3]
        rows.append((f'student + DetKDS ({name})', osp.relpath(path, ROOT), True))
    return rows


def run(family: str, work_root: str, data_root: str, methods, teacher: str = None) -> list:
    os.chdir(ROOT)   # configs name each other relative to the repository root
    if not osp.isfile(osp.join(data_root, 'annotations', 'train.json')):
        from distill_core.shapes import generate_shapes
        generate_shapes(data_root)
    for role in ('teacher', 'student'):   # the pretrained demo backbones (cached: made once)
        ensure_backbone(f'configs/demo/{family}_{role}.py', ROOT, data_root, {}, print, role)
    data_options = {}
    for split in ('train', 'val', 'test'):
        data_options[f'{split}_dataloader.dataset.data_root'] = data_root.rstrip('/') + '/'
    for split in ('val', 'test'):
        data_options[f'{split}_evaluator.ann_file'] = osp.join(data_root, 'annotations', 'val.json')
    results = []
    teacher_ckpt = teacher
    for name, config, needs_teacher in rows_for(family, methods):
        work_dir = osp.join(work_root, family, name.replace(' ', '_').replace('/', '_').replace('+', 'with').replace('(', '')
                            .replace(')', ''))
        options = dict(data_options)
        if needs_teacher:
            options['model.teacher.checkpoint'] = teacher_ckpt
        final = teacher if name == 'teacher' and teacher else osp.join(work_dir, 'final.pth')
        if not osp.isfile(final):
            final = train(config, work_dir=work_dir, cfg_options=options,
                          progress=dict(label=name, log=print, prefix='[demo_table]'))
        if name == 'teacher':
            teacher_ckpt = final
        metrics = test(config, final, work_dir=work_dir, cfg_options=options)
        model = Config.fromfile(config).model
        inherits = model.get('type') == 'DetectionDistiller' and bool(model.get('inherit_neck_head'))
        row = {'row': name, 'config': config, 'inherits': inherits}
        row.update({label: round(metrics.get(key, float('nan')), 3) for label, key in METRICS})
        results.append(row)
        print(f"{name:45s} AP {row['AP']:.3f}  AP50 {row['AP50']:.3f}  AP75 {row['AP75']:.3f}", flush=True)
    return results


def markdown(results: list, family: str) -> str:
    lines = [f'Demo pair: {family} (shapes data, same schedule for every student row)', '',
             '| run | inherits the teacher\'s neck/head | bbox AP | AP50 | AP75 |', '|---|---|---|---|---|']
    lines += [f"| {r['row']} | {'yes' if r['inherits'] else ''} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} |"
              for r in results]
    return '\n'.join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--family', default='retinanet', choices=sorted(DETKDS_FAMILY))
    parser.add_argument('--work-dir', default='work_dirs/demo_table')
    parser.add_argument('--data-root', default='data/shapes')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--teacher', help='a trained teacher checkpoint of the family to reuse (e.g. the demo '
                                          'search\'s work_dirs/demo/retinanet_teacher/final.pth)')
    parser.add_argument('--json', help='also write the rows as JSON here')
    args = parser.parse_args(argv)
    results = run(args.family, osp.abspath(args.work_dir), osp.abspath(args.data_root), args.methods,
                  osp.abspath(args.teacher) if args.teacher else None)
    print(markdown(results, args.family))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
