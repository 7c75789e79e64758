"""Does the search find a distiller that beats the published ones after a full training? The proof on a demo pair.

1. Runs the search of ``--config`` (``detkds-search launch``: resumable, a finished study returns at once) and
   reads its wall time, its proxy evaluations and its answer (a new formulation, or the published baseline no
   searched genome beat).
2. Exports the answer (``<run dir>/<study>_best.py``) and, when the answer is a baseline, also the best searched
   genome (``export --searched``), so that the table always holds what the search found.
3. Trains at the full demo schedule, once per ``--seeds`` (default 100-102: disjoint from the proxy's training
   seeds 0-2, so that no full-schedule run shares an initialisation the search selected on): the exported
   config(s) and every row of ``benchmarks/demo_table.py`` for the pair (student alone, the inheritance-only
   control, every published method with a demo config for the family, the DetKDS genomes shipped for it). Rows
   are trained in the same work folders as ``demo_table.py`` (a finished row is reused, a killed run resumes); an
   exported config that trains exactly what a published row trains (the answer is that method's recipe) shares
   that row's runs.
4. Reports mean +- std of val bbox AP (pycocotools) per row, and whether the searched winner beats the best
   published method by ``--target-margin``; writes ``--json`` (default
   ``benchmarks/results/search_quality_<family>.json``; per row ``name``, ``published``, ``aps``, ``mean``,
   ``std``) and prints a markdown table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_quality.py --config configs/search/quality_retinanet.py \\
        [--study NAME] [--seeds 100 101 102] [--target-margin 0.01] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import demo_table  # noqa: E402

from search.config import load_search_config  # noqa: E402
from search.export import export_study  # noqa: E402
from search.results import describe_answer, read_results  # noqa: E402
from search.status import study_status  # noqa: E402

CONTROLS = ('student alone', 'student + inherited neck/head only')


def run_search(config: str, study: str) -> dict:
    """Launch (or resume, or find finished) the search; its figures from the study record."""
    began = time.time()
    subprocess.run([sys.executable, '-m', 'search.cli', 'launch', config, '--study', study], cwd=ROOT, check=True)
    status = study_status(study)
    results = read_results(study)
    answer = results.answer()
    if answer is None:
        raise SystemExit(f'study {study!r} has no answer: the search did not finish')
    trials = status['trials']
    searched = [t for t in results.search_trials() if not t.interrupted]
    return dict(study=study, wall_s=status['elapsed_s'], this_call_s=round(time.time() - began, 1),
                proxy_evaluations=len([t for t in searched if t.state in ('COMPLETE', 'PRUNED', 'FAIL')]),
                complete=sum(t.state == 'COMPLETE' for t in searched),
                pruned=sum(t.state == 'PRUNED' for t in searched),
                failed=sum(t.state == 'FAIL' for t in searched),
                distinct_genomes=len({t.key for t in searched if t.key}),
                baseline_runs=sum(len(runs) for runs in results.baseline_runs().values()),
                baselines_proxy={name: round(value, 4) for name, value in results.baselines().items()},
                final_rung={name: dict(kind=e['kind'], label=e['label'], runs={str(k): round(v, 4) for k, v in
                                                                               sorted(e['runs'].items())},
                                       failed=e['failed']) for name, e in results.final_runs().items()},
                answer=answer, answer_text=describe_answer(answer), trials=trials)


def exported_rows(study: str, answer: dict, search_config: str) -> list:
    """(row name, exported config, published) for the answer and, where it is a published method (a baseline no
    searched genome beat, or a published genome), the best searched genome as well (when it is a different one).
    ``search_config`` is this run's config: the path the study recorded may be another checkout's."""
    best = export_study(study, search_config=search_config)
    rows = [(f'search answer: {answer["label"]}', best.path, bool(answer['published']))]
    if answer['published']:
        searched = export_study(study, searched=True, search_config=search_config)
        if searched.formula != best.formula:
            rows.append((f'best searched genome: {searched.formula}', searched.path, False))
    return rows


# Keys of an exported config that do not change what it trains: its imports of this project's modules, a DDP flag,
# and the teacher checkpoint (every row's is overridden with the search's teacher).
UNTRAINED_KEYS = ('custom_imports', 'find_unused_parameters')


def training_identity(config: str) -> str:
    """What a config trains (model, data, schedule), as a canonical string: two configs with the same identity
    train the same runs for the same seed, so the second one's rows are the first one's."""
    from mmengine import Config
    cfg = Config.fromfile(osp.join(ROOT, config)).to_dict()
    for key in UNTRAINED_KEYS:
        cfg.pop(key, None)
    (cfg.get('model') or {}).get('teacher', {}).pop('checkpoint', None)
    return json.dumps(cfg, sort_keys=True, default=str)


def shared_slug(config: str, published_rows: list):
    """The work-folder name of the published row training exactly what ``config`` trains (an exported answer that
    is a published method's recipe), else None: its runs are then that row's, not trained twice."""
    identity = training_identity(config)
    return next((slug for _, other, _, slug in published_rows if training_identity(other) == identity), None)


def table_rows(rows: list, family: str, seeds, teacher: str, work_root: str, options: dict) -> list:
    """Train and test every (row, seed) (``demo_table.train_rows``: shared work folders, reused, never trained
    twice at once) and summarise each row: mean, std and AP per seed."""
    trained = demo_table.train_rows([(name, config, needs_teacher, slug)
                                     for name, config, needs_teacher, _, slug in rows],
                                    seeds, work_root, family, options, teacher)
    table = []
    for name, config, _, kind, _ in rows:
        row = demo_table.summarise(name, config, trained[name])
        table.append(dict(name=name, kind=kind, published=kind == 'published', config=row['config'],
                          inherits=row['inherits'], aps=row['aps'], mean=row['mean'], std=row['std'],
                          AP50=row['AP50'], AP75=row['AP75']))
        print(f'[search_quality] {name}: AP {table[-1]["mean"]:.4f} +- {table[-1]["std"]:.4f} {table[-1]["aps"]}',
              flush=True)
    return table


def verdict(table: list, margin: float) -> dict:
    """The searched winner (the searched row with the best mean) against the best published row."""
    published = [r for r in table if r['kind'] == 'published']
    searched = [r for r in table if r['kind'] == 'searched']
    best_published = max(published, key=lambda r: r['mean']) if published else None
    winner = max(searched, key=lambda r: r['mean']) if searched else None
    if best_published is None or winner is None:
        return dict(met=None)
    gap = winner['mean'] - best_published['mean']
    return dict(winner=winner['name'], winner_mean=winner['mean'], best_published=best_published['name'],
                best_published_mean=best_published['mean'], gap=round(gap, 4), target_margin=margin,
                met=gap >= margin - 1e-12)


def markdown(report: dict) -> str:
    search = report['search']
    lines = [f'Search `{search["study"]}` ({report["config"]}): {search["proxy_evaluations"]} proxy evaluations '
             f'({search["complete"]} complete, {search["pruned"]} stopped early, {search["failed"]} failed; '
             f'{search["distinct_genomes"]} genomes) plus {search["baseline_runs"]} baseline runs, '
             f'{search["wall_s"] / 60:.1f} min' + (f' (final rung: {len(search["final_rung"])} finalists)'
                                                    if search.get('final_rung') else '') +
             f'. Answer: {search["answer_text"]}.', '',
             f'Full demo schedule, val bbox AP (pycocotools), seeds {report["seeds"]}; teacher {report["teacher_ap"]:.3f}',
             '', '| row | kind | inherits | mean AP | std | AP per seed | AP50 | AP75 |',
             '|---|---|---|---|---|---|---|---|']
    for row in report['rows']:
        lines.append(f"| {row['name'].replace('|', '/')} | {row['kind']} | {'yes' if row['inherits'] else ''} | {row['mean']:.4f} | "
                     f"{row['std']:.4f} | {', '.join(f'{a:.3f}' for a in row['aps'])} | {row['AP50']:.3f} | "
                     f"{row['AP75']:.3f} |")
    v = report['verdict']
    if v.get('met') is not None:
        lines += ['', f"Searched winner {v['winner_mean']:.4f} vs best published ({v['best_published']}) "
                      f"{v['best_published_mean']:.4f}: {v['gap']:+.4f} (target >= {v['target_margin']:+.3f}: "
                      f"{'met' if v['met'] else 'MISSED'})"]
    return '\n'.join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='configs/search/quality_retinanet.py')
    parser.add_argument('--study', help='default: the config file name')
    parser.add_argument('--seeds', nargs='+', type=int, default=[100, 101, 102],
                        help='full-schedule training seeds (not the proxy\'s)')
    parser.add_argument('--methods', nargs='+', default=list(demo_table.METHODS), choices=demo_table.METHODS)
    parser.add_argument('--target-margin', type=float, default=0.01,
                        help='AP the searched winner must gain over the best published method')
    parser.add_argument('--work-dir', default='work_dirs/demo_table')
    parser.add_argument('--data-root', default='data/shapes')
    parser.add_argument('--json', help='default benchmarks/results/search_quality_<family>.json')
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    cfg = load_search_config(args.config)
    family = cfg.family()
    study = args.study or osp.splitext(osp.basename(args.config))[0]
    teacher = osp.abspath(cfg.raw['teacher']['checkpoint'])

    search = run_search(args.config, study)
    print(f'[search_quality] search: {search["proxy_evaluations"]} proxy evaluations, {search["wall_s"]:.0f} s; '
          f'answer: {search["answer_text"]}', flush=True)
    work_root, data_root = osp.abspath(args.work_dir), osp.abspath(args.data_root)
    options = demo_table.prepare(family, data_root)
    teacher_metrics, _ = demo_table.test_teacher(family, work_root, options, teacher)
    # the exported rows first (what only this benchmark trains), then demo_table's rows (possibly trained already)
    exported = exported_rows(study, search['answer'], osp.abspath(args.config))
    table_configs = [(name, config, needs_teacher, name)
                     for name, config, needs_teacher in demo_table.rows_for(family, args.methods) if name != 'teacher']
    rows = []
    for name, path, published in exported:
        config = osp.relpath(path, ROOT)
        slug = shared_slug(config, table_configs)
        if slug:
            print(f'[search_quality] {name}: the exported config trains what row {slug!r} trains; its runs are that '
                  "row's", flush=True)
        rows.append((name, config, True, 'published' if published else 'searched',
                     slug or f'{study}_{osp.basename(path)[:-3]}'))
    rows += [(name, config, needs_teacher, 'control' if name in CONTROLS else 'published', slug)
             for name, config, needs_teacher, slug in table_configs]
    table = table_rows(rows, family, args.seeds, teacher, work_root, options)
    report = dict(config=args.config, family=family, seeds=args.seeds, teacher_ap=round(teacher_metrics['AP'], 4),
                  search=search, rows=table, verdict=verdict(table, args.target_margin))
    out = args.json or osp.join('benchmarks', 'results', f'search_quality_{family}.json')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(report, f, indent=2)
    print(markdown(report))


if __name__ == '__main__':
    main()
