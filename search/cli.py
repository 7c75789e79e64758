"""``detkds-search``: one command line for data, training, evaluation, transfer and (later) the search.

Every user error (bad config key, missing file, unreachable service) is printed as one line and exits with
code 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional

EXIT_USER_ERROR = 2


def _parse_options(pairs: Optional[List[str]]) -> Dict:
    """``key=value`` overrides in mmengine's dotted style; values are read as JSON when they parse."""
    from distill_core.errors import ConfigError
    options = {}
    for pair in pairs or []:
        if '=' not in pair:
            raise ConfigError(f'--cfg-options expects key=value, got {pair!r}')
        key, value = pair.split('=', 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def cmd_data(args) -> None:
    from distill_core.shapes import generate_shapes
    summary = generate_shapes(args.out, num_train=args.train, num_val=args.val, size=args.size, seed=args.seed,
                              overwrite=args.overwrite)
    print(json.dumps(summary, indent=2, default=str))


def cmd_train(args) -> None:
    from workers.full_training import train
    final = train(args.config, args.work_dir, args.launcher, _parse_options(args.cfg_options), args.resume)
    print(f'final checkpoint: {final}')


def cmd_pretrain_backbone(args) -> None:
    import os.path as osp

    from distill_core.errors import ConfigError
    from workers.backbone_pretrain import pretrain_backbone
    from workers.prepare import backbone_checkpoint
    from workers.settings import PretrainSettings
    out = args.out or backbone_checkpoint(args.config, '.')
    if out is None:
        raise ConfigError(f'{args.config}: its backbone names no PretrainedBackbone checkpoint; give --out FILE')
    if osp.isfile(out) and not args.overwrite:
        raise ConfigError(f'{out} exists (pass --overwrite to pretrain it again)')
    values = {k: v for k, v in (('iterations', args.iterations), ('batch_size', args.batch_size),
                                ('seed', args.seed)) if v is not None}
    meta = pretrain_backbone(args.config, args.data_root, out, PretrainSettings.from_dict(values, 'pretrain-backbone'))
    print(json.dumps(dict(checkpoint=out, val_accuracy=meta['val_accuracy'],
                          chance_accuracy=meta['chance_accuracy']), indent=2))


def cmd_test(args) -> None:
    from workers.full_training import test
    metrics = test(args.config, args.checkpoint, args.work_dir, args.launcher, _parse_options(args.cfg_options),
                   args.out, quiet=not args.verbose)
    print(json.dumps(metrics, indent=2, sort_keys=True))


def cmd_transfer(args) -> None:
    from distill_core.checkpoint import extract_student, load_checkpoint_file, save_atomic
    student = extract_student(load_checkpoint_file(args.checkpoint, 'distiller'))
    save_atomic(student, args.out)
    print(f'wrote {args.out}: {len(student["state_dict"])} student tensors')


def cmd_launch(args) -> None:
    from .controller import launch
    summary = launch(args.config, study=args.study, run_dir=args.run_dir, storage=args.storage,
                     ray_address=args.ray_address, resume=args.resume, max_trials=args.max_trials,
                     verbose=args.verbose)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))


def cmd_fidelity(args) -> None:
    from .fidelity import run_fidelity
    summary = run_fidelity(args.config, study=args.study, run_dir=args.run_dir, storage=args.storage,
                           ray_address=args.ray_address, panel=args.panel, seeds=args.seeds, reference=args.reference,
                           proxy=args.proxy, threshold=args.threshold, verbose=args.verbose,
                           log=lambda line: print(line, file=sys.stderr if args.json else sys.stdout, flush=True))
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))


def cmd_status(args) -> None:
    from .status import format_status, study_status
    status = study_status(args.study, storage=args.storage, run_dir=args.run_dir)
    print(json.dumps(status, indent=2) if args.json else format_status(status))


def cmd_export(args) -> None:
    from .export import export_study, exported_json
    exported = export_study(args.study, out=args.out, storage=args.storage, run_dir=args.run_dir, rank=args.rank,
                            search_config=args.search_config, searched=args.searched)
    print(exported_json(exported) if args.json else
          f'wrote {exported.path}: rank {exported.rank}, proxy AP {exported.value:.4f}, {exported.formula}')


def cmd_dashboard(args) -> None:
    from .dashboard import serve
    serve(args.study, storage=args.storage, run_dir=args.run_dir, host=args.host, port=args.port,
          annotate=not args.no_annotate)


def cmd_report(args) -> None:
    from .report import write_report
    print(f'wrote {write_report(args.study, args.out, storage=args.storage, run_dir=args.run_dir)}')


def cmd_baselines(args) -> None:
    from .baselines import run_baselines
    done = run_baselines(args.config, args.study, names=args.names, storage=args.storage, run_dir=args.run_dir,
                         log=lambda line: print(line, file=sys.stderr, flush=True))   # stdout: the result only
    print(json.dumps(done, indent=2, sort_keys=True) if args.json else
          '\n'.join(f'{name}: proxy AP {value:.4f}' for name, value in sorted(done.items())))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='detkds-search', description=__doc__.splitlines()[0])
    parser.add_argument('--debug', action='store_true', help='show tracebacks for errors')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    data = sub.add_parser('data', help='generate the synthetic shapes dataset (COCO format)')
    data_sub = data.add_subparsers(dest='dataset', required=True, metavar='DATASET')
    shapes = data_sub.add_parser('shapes', help='PNG images of shapes on textured backgrounds + COCO JSON')
    shapes.add_argument('--out', required=True, help='output folder (e.g. data/shapes)')
    shapes.add_argument('--train', type=int, default=600, help='training images (default 600)')
    shapes.add_argument('--val', type=int, default=150, help='validation images (default 150)')
    shapes.add_argument('--size', type=int, default=128, help='image side in pixels (default 128)')
    shapes.add_argument('--seed', type=int, default=0)
    shapes.add_argument('--overwrite', action='store_true', help='replace an existing dataset folder')
    shapes.set_defaults(func=cmd_data)

    def runner_args(p):
        p.add_argument('--work-dir', help='output folder (default work_dirs/<config name>)')
        p.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                       help='pytorch: distributed, started with torchrun')
        p.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE', help='override config keys')

    train = sub.add_parser('train', help='train a detector or a distiller config (mmengine Runner)')
    train.add_argument('config')
    runner_args(train)
    train.add_argument('--resume', action='store_true', help='resume from the last checkpoint in --work-dir')
    train.set_defaults(func=cmd_train)

    test = sub.add_parser('test', help='evaluate a checkpoint: COCO bbox AP (pycocotools)')
    test.add_argument('config')
    test.add_argument('checkpoint')
    runner_args(test)
    test.add_argument('--out', help='write the metrics as JSON here')
    test.add_argument('--verbose', action='store_true', help='print mmengine\'s full log and pycocotools\' tables '
                                                             '(default: only the metrics; the log stays in --work-dir)')
    test.set_defaults(func=cmd_test)

    pretrain = sub.add_parser('pretrain-backbone', help='pretrain a detector config\'s backbone on a COCO-style '
                                                        'dataset (object/background crops; the demo\'s ImageNet)')
    pretrain.add_argument('config', help='detector config whose backbone to pretrain (e.g. configs/demo/'
                                         'retinanet_student.py)')
    pretrain.add_argument('--data-root', default='data/shapes', help='dataset folder (annotations/train.json, '
                                                                     'train/, val/); default data/shapes')
    pretrain.add_argument('--out', help='checkpoint to write (default: the one the config\'s init_cfg names)')
    pretrain.add_argument('--iterations', type=int)
    pretrain.add_argument('--batch-size', type=int)
    pretrain.add_argument('--seed', type=int)
    pretrain.add_argument('--overwrite', action='store_true', help='replace an existing checkpoint')
    pretrain.set_defaults(func=cmd_pretrain_backbone)

    transfer = sub.add_parser('transfer', help='student-only checkpoint from a distiller checkpoint')
    transfer.add_argument('checkpoint')
    transfer.add_argument('out')
    transfer.set_defaults(func=cmd_transfer)

    def storage_args(p):
        p.add_argument('--run-dir', help='run folder (default runs/<study>); holds the default journal storage')
        p.add_argument('--storage', help='Optuna storage URL: a journal file path (default <run-dir>/study.journal), '
                                         'postgresql://USER[:PW]@HOST/DB or mongodb://...; a password may come '
                                         'from DETKDS_STORAGE_PASSWORD')
        p.add_argument('--json', action='store_true', help='print the result as JSON')

    launch = sub.add_parser('launch', help='run (or resume) a distillation search')
    launch.add_argument('config', help='search config, e.g. configs/search/demo_retinanet.py')
    launch.add_argument('--study', help='study name (default: the config file name)')
    storage_args(launch)
    launch.add_argument('--ray-address', help='HOST:PORT of an existing Ray cluster (default: start a local one)')
    launch.add_argument('--resume', action='store_true', help='require an existing study and continue it '
                                                              '(relaunching a study resumes it anyway)')
    launch.add_argument('--max-trials', type=int, help='stop after this many trials in the study')
    launch.add_argument('--verbose', action='store_true', help='preparation (demo teacher training) prints '
                                                               'mmengine\'s full log, not only progress lines')
    launch.set_defaults(func=cmd_launch)

    fidelity = sub.add_parser('fidelity', help='measure how well the proxy ranks distillers against full training')
    fidelity.add_argument('config', help='search config of the pair, e.g. configs/search/demo_retinanet.py')
    fidelity.add_argument('--study', help='study name (default fidelity_<config name>); relaunching resumes it')
    storage_args(fidelity)
    fidelity.add_argument('--ray-address', help='HOST:PORT of an existing Ray cluster (default: a local one)')
    fidelity.add_argument('--panel', type=int, default=12, help='members: the student alone, the baselines, the '
                                                                'published DetKDS genomes, random genomes (default 12)')
    fidelity.add_argument('--seeds', type=int, default=2, help='training seeds per proxy run (default 2)')
    fidelity.add_argument('--reference', default='full', help='"full" (the config\'s full_training, val split) or '
                                                             'a number of proxy iterations (default full)')
    fidelity.add_argument('--proxy', nargs='+', metavar='KEY=V1,V2', help='proxy settings to compare (every '
                                                                         'combination), e.g. iterations=20,40,80 '
                                                                         'train_images=120,240')
    fidelity.add_argument('--threshold', type=float, default=0.6, help='Kendall tau a setting must reach (0.6)')
    fidelity.add_argument('--verbose', action='store_true', help='preparation prints mmengine\'s full log')
    fidelity.set_defaults(func=cmd_fidelity)

    status = sub.add_parser('status', help='stage, generation, trial counts, best distiller of a study')
    status.add_argument('--study', required=True)
    storage_args(status)
    status.set_defaults(func=cmd_status)

    export = sub.add_parser('export', help='the best (or rank-N) distiller as a standalone training config')
    export.add_argument('--study', required=True)
    storage_args(export)
    export.add_argument('--rank', type=int, default=1, help='1 = the search\'s answer (default): its decided '
                        'genome, or the published baseline no searched genome beat; N = the N-th searched genome')
    export.add_argument('--searched', action='store_true', help='the rank-N searched genome even where a baseline '
                        'is the answer (default file <run-dir>/<study>_searched.py)')
    export.add_argument('-o', '--out', help='output file (default <run-dir>/<study>_best.py)')
    export.add_argument('--search-config', help='the search config, when it moved since the launch')
    export.set_defaults(func=cmd_export)

    dashboard = sub.add_parser('dashboard', help='optuna-dashboard on the study storage, with the search views')
    dashboard.add_argument('--study', help='annotate only this study (default: every search study in storage); '
                                           'also names the default storage runs/<study>/study.journal')
    storage_args(dashboard)
    dashboard.add_argument('--host', default='127.0.0.1')
    dashboard.add_argument('--port', type=int, default=8080)
    dashboard.add_argument('--no-annotate', action='store_true',
                           help='serve only: do not write notes and plots into the study')
    dashboard.set_defaults(func=cmd_dashboard)

    report = sub.add_parser('report', help='a self-contained HTML page of a search')
    report.add_argument('--study', required=True)
    storage_args(report)
    report.add_argument('-o', '--out', required=True, help='HTML file to write')
    report.set_defaults(func=cmd_report)

    baselines = sub.add_parser('baselines', help='no distillation, FGD, MGD, PKD under the search\'s proxy')
    baselines.add_argument('config', help='the search config of the study')
    baselines.add_argument('--study', required=True)
    storage_args(baselines)
    baselines.add_argument('--names', nargs='+', help='baselines to run (default: the config\'s `baselines` '
                                                      'or none, fgd, mgd, pkd)')
    baselines.set_defaults(func=cmd_baselines)
    return parser


def _quiet_library_logs() -> None:
    """stdout carries the command's result (``--json`` output is parsed by scripts) and errors are one line:
    mmengine's default logger (notes on every config loaded, such as a substituted DETKDS_DEMO_BACKBONES, and on
    every initialised parameter) keeps its warnings, on stderr. A training Runner logs through its own logger."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    logger.setLevel(logging.WARNING)
    for handler in logger.handlers:
        if type(handler) is logging.StreamHandler and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_library_logs()
    from distill_core.errors import DetKDSError
    try:
        args.func(args)
    except DetKDSError as exc:
        if args.debug:
            raise
        print(f'detkds-search: error: {exc}', file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print('detkds-search: interrupted', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
