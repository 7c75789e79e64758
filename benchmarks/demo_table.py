"""The published distillers on one demo pair: bbox AP, AP50, AP75 of the teacher, the student alone and
the student trained with each method, all on the same full demo schedule (the student config's).

Rows: teacher; student alone; the student inheriting the teacher's neck and head with no distillation loss
(the control for every method config that inherits); student + FGD / MGD / PKD / GKD / Global-Knowledge / CrossKD /
BCKD (every ``configs/distillers/<method>/<method>_demo_<family>.py`` that exists) and the DetKDS searched distillers
shipped for the family (``configs/distillers/detkds/detkds_demo_*``, one per published COCO pair).
Long: about 10 trainings of 600-1200 iterations on CPU. Reuses a trained teacher when its checkpoint exists, and
every finished row (its work dir's final.pth): a killed run resumes at the row it was training. ``--seeds 0 1 2``
trains every student row once per seed (``randomness.seed``; the teacher once) and reports mean and std.

``--config configs/search/demo_<pair>.py`` tables a search config's pair instead (heterogeneous pairs such as
Cascade R-CNN -> Faster R-CNN or Faster R-CNN -> RetinaNet, and Mask R-CNN, whose rows add mask AP): its teacher
(trained where the search trains it, when missing), the student alone, the inheritance-only control when the
pair's proxy inherits, the config's published baselines and the DetKDS genomes shipped for the student's family
that the pair can serve, each trained exactly as ``detkds-search export`` would write it (the config's
``full_training`` schedule and strategy: ``search.export.build_training_config``).

    .venv/bin/python benchmarks/demo_table.py [--family retinanet | --config SEARCH_CONFIG]
        [--work-dir work_dirs/demo_table] [--data-root data/shapes] [--methods fgd mgd ...] [--teacher CKPT]
        [--seeds 0 1 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
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
MASK_METRICS = (('mask AP', 'coco/segm_mAP'), ('mask AP50', 'coco/segm_mAP_50'))   # where the evaluator has segm
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
    rows += [(name, osp.relpath(path, ROOT), True) for name, path in detkds_rows(family)]
    return rows


def detkds_rows(family: str) -> list:
    """(row name, config path) of the DetKDS searched distillers shipped for the student family, one per published
    COCO pair (``configs/distillers/detkds/detkds_demo_<pair>.py``); none for a family without any."""
    if family not in DETKDS_FAMILY:
        return []
    paths = sorted(glob.glob(osp.join(ROOT, 'configs/distillers/detkds', f'detkds_demo_{DETKDS_FAMILY[family]}*.py')))
    return [(f'student + DetKDS ({osp.basename(path)[len("detkds_demo_"):-3]})', path) for path in paths]


def pair_name(search_config: str) -> str:
    """``configs/search/demo_cascade_faster_rcnn.py`` -> ``cascade_faster_rcnn`` (the pair's work folder)."""
    name = osp.splitext(osp.basename(search_config))[0]
    return name[len('demo_'):] if name.startswith('demo_') else name


def pair_rows(search_config: str, work_root: str, methods) -> tuple:
    """A search config's pair: (the loaded search config, rows as ``train_rows`` takes them). Every distiller row
    is the config ``detkds-search export`` would write for those losses (the config's ``full_training`` schedule,
    its proxy's strategy and level pairing), written to ``<work_root>/<pair>/configs/``. A DetKDS genome using an
    input the pair cannot serve is left out, with the reason printed."""
    from search.baselines import baseline_specs, distill_losses_of
    from search.config import load_search_config
    from search.export import build_training_config, proxy_strategy, render_config
    from search.space import Space
    cfg = load_search_config(search_config, ROOT)
    raw, pair = cfg.raw, pair_name(search_config)
    losses = [('student alone', None)]
    if proxy_strategy(raw).inherit_neck_head:
        losses.append(('student + inherited neck/head only', []))
    for name, path in baseline_specs(raw, search_config).items():
        if name != 'none' and name in methods:
            losses.append((f'student + {name}', distill_losses_of(path)))
    dropped = Space.from_file(cfg.space_path).dropped_inputs(cfg.families())
    for name, path in detkds_rows(cfg.family()):
        entries = distill_losses_of(path)
        unserved = sorted({term['input'] for entry in entries for term in entry['loss']['genome']['terms']}
                          & set(dropped))
        if unserved:
            print(f'[demo_table] {osp.basename(path)} left out: {"; ".join(dropped[i] for i in unserved)}')
            continue
        losses.append((name, entries))
    folder = osp.join(work_root, pair, 'configs')
    os.makedirs(folder, exist_ok=True)
    rows = []
    for name, entries in losses:
        if entries is None:
            rows.append((name, raw['student']['config'], False, name))
            continue
        config = osp.join(folder, row_slug(name) + '.py')
        text = render_config(build_training_config(raw, entries, search_config),
                             f'# {name} on the demo pair {pair}, as `detkds-search export` writes a distiller for '
                             f'{osp.relpath(search_config, ROOT)} (benchmarks/demo_table.py)')
        if _read(config) != text:   # unchanged: keep the mtime (reuse)
            with open(config, 'w') as f:
                f.write(text)
        rows.append((name, config, True, name))
    return cfg, rows


def _read(path: str):
    """The text of ``path``, or None when there is no such file."""
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return f.read()


def row_slug(name: str) -> str:
    return name.replace(' ', '_').replace('/', '_').replace('+', 'with').replace('(', '').replace(')', '')


def row_work_dir(work_root: str, family: str, name: str, seed: int) -> str:
    """Seed 0 keeps the folder earlier single-seed tables used, so their finished rows are reused."""
    slug = row_slug(name)
    return osp.join(work_root, family, slug if seed == 0 else f'{slug}_seed{seed}')


def prepare(family: str, data_root: str) -> dict:
    """Generate the data and the pretrained demo backbones (both cached); the cfg options pointing every
    split at ``data_root``."""
    os.chdir(ROOT)   # configs name each other relative to the repository root
    if not osp.isfile(osp.join(data_root, 'annotations', 'train.json')):
        from distill_core.shapes import generate_shapes
        generate_shapes(data_root)
    for role in ('teacher', 'student'):   # the pretrained demo backbones (cached: made once)
        ensure_backbone(f'configs/demo/{family}_{role}.py', ROOT, data_root, {}, print, role)
    return data_options(data_root)


def data_options(data_root: str) -> dict:
    """The cfg options pointing every split and evaluator at ``data_root``."""
    options = {}
    for split in ('train', 'val', 'test'):
        options[f'{split}_dataloader.dataset.data_root'] = data_root.rstrip('/') + '/'
    for split in ('val', 'test'):
        options[f'{split}_evaluator.ann_file'] = osp.join(data_root, 'annotations', 'val.json')
    return options


def train_and_test(name: str, config: str, work_dir: str, options: dict, seed: int,
                   checkpoint: str = None) -> tuple:
    """Train ``config`` at ``seed`` (unless ``work_dir`` holds its final.pth or ``checkpoint`` is given), test it
    on the val images; returns (the row's metrics, the checkpoint)."""
    options = dict(options, **{'randomness.seed': seed})
    final = checkpoint or osp.join(work_dir, 'final.pth')
    if not osp.isfile(final):
        final = train(config, work_dir=work_dir, cfg_options=options,
                      progress=dict(label=f'{name} (seed {seed})', log=print, prefix='[demo_table]'))
    saved = osp.join(work_dir, 'val_metrics.json')   # the test of this checkpoint, kept: a re-run only reads it
    if osp.isfile(saved) and osp.getmtime(saved) >= osp.getmtime(final):
        with open(saved) as f:
            metrics = json.load(f)
    else:
        metrics = test(config, final, work_dir=work_dir, cfg_options=options, out=saved)
    row = {label: metrics.get(key, float('nan')) for label, key in METRICS}
    row.update({label: metrics[key] for label, key in MASK_METRICS if key in metrics})
    return row, final


@contextlib.contextmanager
def _claimed(work_dir: str, wait: bool):
    """Hold ``work_dir``'s lock (yields True), or yield False at once when another process holds it and ``wait``
    is False: two benchmark processes sharing a work root (demo_table.py beside search_quality.py) each train
    rows the other is not training, and wait only at the end."""
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, 'train.lock'), 'a') as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def train_rows(rows, seeds, work_root: str, family: str, options: dict, teacher_ckpt: str = None) -> dict:
    """Train and test every (row, seed): ``rows`` are (name, config, needs the teacher, work-folder name). Seeds
    outermost, so that a cut-short run leaves whole single-seed tables; a (row, seed) another process is training
    is deferred to the end. Returns name -> metrics per seed, in ``seeds`` order."""
    pending = [(seed, row) for seed in seeds for row in rows]
    done = {}
    for wait in (False, True):
        deferred = []
        for seed, (name, config, needs_teacher, slug) in pending:
            row_options = dict(options)
            if needs_teacher:
                row_options['model.teacher.checkpoint'] = teacher_ckpt
            work_dir = row_work_dir(work_root, family, slug, seed)
            with _claimed(work_dir, wait) as mine:
                if not mine:
                    deferred.append((seed, (name, config, needs_teacher, slug)))
                    continue
                done[(name, seed)], _ = train_and_test(name, config, work_dir, row_options, seed)
            print(f'[demo_table] {name} (seed {seed}): AP {done[(name, seed)]["AP"]:.4f}', flush=True)
        pending = deferred
    return {name: [done[(name, seed)] for seed in seeds] for name, _, _, _ in rows}


def summarise(name: str, config: str, per_seed: list) -> dict:
    """A row: per-metric mean (rounded to 3 places as before), and the AP per seed with its mean and std (4
    places, from the unrounded values)."""
    import statistics
    model = Config.fromfile(osp.join(ROOT, config)).model
    inherits = model.get('type') == 'DetectionDistiller' and bool(model.get('inherit_neck_head'))
    shown = osp.relpath(config, ROOT) if osp.isabs(config) and config.startswith(ROOT + os.sep) else config
    row = {'row': name, 'config': shown, 'inherits': inherits}   # the JSON names no checkout
    for label, _ in METRICS + MASK_METRICS:
        if all(label in m for m in per_seed):
            row[label] = round(statistics.fmean(m[label] for m in per_seed), 3)
    aps = [m['AP'] for m in per_seed]
    row['aps'] = [round(ap, 4) for ap in aps]
    row['mean'] = round(statistics.fmean(aps), 4)
    row['std'] = round(statistics.stdev(aps), 4) if len(aps) > 1 else 0.0
    return row


def test_teacher(family: str, work_root: str, options: dict, teacher: str = None) -> tuple:
    """Train the family's demo teacher (unless ``teacher`` is a checkpoint of it) and test it: (metrics, ckpt)."""
    config = f'configs/demo/{family}_teacher.py'
    return train_and_test('teacher', config, row_work_dir(work_root, family, 'teacher', 0), options, 0, teacher)


def run(family: str, work_root: str, data_root: str, methods, teacher: str = None, seeds=(0,)) -> list:
    options = prepare(family, data_root)
    teacher_metrics, teacher_ckpt = test_teacher(family, work_root, options, teacher)
    rows = [(name, config, needs_teacher, name) for name, config, needs_teacher in rows_for(family, methods)
            if name != 'teacher']
    return table(rows, seeds, work_root, family, options, f'configs/demo/{family}_teacher.py', teacher_metrics,
                 teacher_ckpt)


def run_pair(search_config: str, work_root: str, data_root: str, methods, seeds=(0,)) -> list:
    """The table of a search config's pair (``pair_rows``); its data, backbones and teacher are made as
    ``detkds-search launch`` makes them (cached: shared with the pair's searches)."""
    from workers.prepare import prepare_search_inputs
    os.chdir(ROOT)
    cfg, rows = pair_rows(search_config, work_root, methods)
    prepare_search_inputs(cfg.raw, ROOT)
    options = data_options(data_root)
    teacher = cfg.raw['teacher']
    pair = pair_name(search_config)
    teacher_metrics, teacher_ckpt = train_and_test('teacher', teacher['config'],
                                                   row_work_dir(work_root, pair, 'teacher', 0), options, 0,
                                                   osp.abspath(teacher['checkpoint']))
    return table(rows, seeds, work_root, pair, options, teacher['config'], teacher_metrics, teacher_ckpt)


def table(rows, seeds, work_root: str, folder: str, options: dict, teacher_config: str, teacher_metrics: dict,
          teacher_ckpt: str) -> list:
    """Train every student row (``train_rows``) and summarise the table, the teacher's row first."""
    results = [summarise('teacher', teacher_config, [teacher_metrics])]
    trained = train_rows(rows, seeds, work_root, folder, options, teacher_ckpt)
    for name, config, _, _ in rows:
        row = summarise(name, config, trained[name])
        results.append(row)
        mask = f"  mask AP {row['mask AP']:.3f}" if 'mask AP' in row else ''
        print(f"{name:45s} AP {row['AP']:.3f} (std {row['std']:.3f})  AP50 {row['AP50']:.3f}  "
              f"AP75 {row['AP75']:.3f}{mask}", flush=True)
    return results


def markdown(results: list, family: str) -> str:
    masks = [label for label, _ in MASK_METRICS if any(label in r for r in results)]
    lines = [f'Demo pair: {family} (shapes data, same schedule for every student row; means over seeds)', '',
             '| run | inherits the teacher\'s neck/head | bbox AP | AP per seed | std | AP50 | AP75 |'
             + ''.join(f' {label} |' for label in masks), '|---|---|---|---|---|---|---|' + '---|' * len(masks)]
    lines += [f"| {r['row']} | {'yes' if r['inherits'] else ''} | {r['AP']:.3f} | "
              f"{', '.join(f'{ap:.3f}' for ap in r['aps'])} | {r['std']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} |"
              + ''.join(f" {r[label]:.3f} |" if label in r else ' |' for label in masks)
              for r in results]
    return '\n'.join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    pair = parser.add_mutually_exclusive_group()
    pair.add_argument('--family', default='retinanet', choices=sorted(DETKDS_FAMILY))
    pair.add_argument('--config', help='a demo search config: table its pair (e.g. '
                                       'configs/search/demo_cascade_faster_rcnn.py)')
    parser.add_argument('--work-dir', default='work_dirs/demo_table')
    parser.add_argument('--data-root', default='data/shapes')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--teacher', help='a trained teacher checkpoint of the family to reuse (e.g. the demo '
                                          'search\'s work_dirs/demo/retinanet_teacher/final.pth)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0], help='training seeds of every student row')
    parser.add_argument('--json', help='also write the rows as JSON here')
    args = parser.parse_args(argv)
    if args.config:
        if args.teacher:
            parser.error('--teacher: a search config names its teacher checkpoint')
        results = run_pair(osp.abspath(args.config), osp.abspath(args.work_dir), osp.abspath(args.data_root),
                           args.methods, args.seeds)
    else:
        results = run(args.family, osp.abspath(args.work_dir), osp.abspath(args.data_root), args.methods,
                      osp.abspath(args.teacher) if args.teacher else None, args.seeds)
    print(markdown(results, pair_name(args.config) if args.config else args.family))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
