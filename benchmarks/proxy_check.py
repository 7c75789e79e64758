"""How well the search's proxy, and a longer one, rank the distillers of a search-quality table: a fidelity
measurement on the members that already have full-schedule rows (the search's bar and its answer), so no reference
is trained again.

Inputs: the JSON of ``benchmarks/search_quality.py`` (full-schedule means per row, the search's study) and a study
of ``detkds-search baselines`` run on a config that re-runs the same bar and the exported answer under another
proxy (e.g. ``benchmarks/configs/proxy_check_faster_rcnn.py``: 120 iterations). Each proxy setting gets the figures
of ``detkds-search fidelity`` (Kendall tau, Spearman rho, top-1 regret, seed noise against spread).

    .venv/bin/python benchmarks/proxy_check.py --quality benchmarks/results/search_quality_faster_rcnn.json \\
        --check 'proxy120_faster_rcnn=120 iterations' [--out benchmarks/results/proxy_check_faster_rcnn.json] \\
        [--reference pkd_inherit=0.5720 ...] [--no-search-proxy]

``--reference NAME=AP`` adds the full-schedule mean of a member that is no row of the table (measured by another
search-quality run); ``--no-search-proxy`` leaves out the search study's own proxy (e.g. on a checkout without it).
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from search.fidelity_stats import fidelity_summary  # noqa: E402
from search.results import read_results  # noqa: E402

ANSWER = 'answer'


def full_means(quality: dict) -> dict:
    """Member name (as the baselines name them) -> full-schedule mean AP. The proxy's ``none`` inherits the
    teacher's neck/head (as every proxy run), so its full-schedule counterpart is the inheritance-only control."""
    means = {}
    for row in quality['rows']:
        if row['kind'] == 'searched':
            means.setdefault(ANSWER, row['mean'])
        elif row['name'] == 'student + inherited neck/head only':
            means['none'] = row['mean']
        elif row['name'].startswith('student + '):
            means[row['name'][len('student + '):]] = row['mean']
    return means


def search_proxy_runs(study: str) -> dict:
    """The search's own proxy: its baselines' runs and its answer's evaluations, member -> seed -> AP."""
    results = read_results(study, run_dir=osp.join('runs', study))
    runs = results.baseline_runs()
    answer = results.answer()
    if answer and answer.get('kind') == 'genome':
        ranked = next(r for r in results.ranked() if r.key == answer['key'])
        runs[ANSWER] = {results.trial(n).seed: results.trial(n).value for n in ranked.trials}
    return runs


def setting(runs: dict, reference: dict) -> dict:
    members = [m for m in sorted(runs) if m in reference]
    proxy = [[runs[m][s] for s in sorted(runs[m])] for m in members]
    summary = fidelity_summary(proxy, [reference[m] for m in members])
    summary = {k: None if v is None else round(v, 4) for k, v in summary.items()}
    summary['members'] = {m: dict(proxy=[round(v, 4) for v in values], proxy_mean=round(sum(values) / len(values), 4),
                                  reference=reference[m]) for m, values in zip(members, proxy)}
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quality', required=True, help='a benchmarks/search_quality.py JSON')
    parser.add_argument('--check', nargs='+', default=[], metavar='STUDY=LABEL',
                        help='studies of `detkds-search baselines` under another proxy, each with a label saying '
                             'what that proxy changes (e.g. "120 iterations")')
    parser.add_argument('--reference', nargs='+', default=[], metavar='NAME=AP',
                        help='full-schedule mean AP of a member that is no row of --quality')
    parser.add_argument('--no-search-proxy', action='store_true', help="leave out the search study's own proxy")
    parser.add_argument('--out', help='write the result as JSON here')
    args = parser.parse_args(argv)
    with open(args.quality) as f:
        quality = json.load(f)
    reference = full_means(quality)
    for item in args.reference:
        name, _, value = item.partition('=')
        reference[name] = float(value)
    settings = {}
    if not args.no_search_proxy:
        settings['search proxy (the search study)'] = setting(search_proxy_runs(quality['search']['study']), reference)
    for item in args.check:
        study, _, label = item.partition('=')
        runs = read_results(study, run_dir=osp.join('runs', study)).baseline_runs()
        settings[f'{label or study} ({study})'] = setting(runs, reference)
    report = dict(quality=args.quality, reference='full demo schedule, mean of ' + str(quality['seeds']),
                  extra_references=args.reference, settings=settings)
    shown = sorted({m for s in settings.values() for m in s['members']}, key=lambda m: -reference[m])
    print('| proxy | members | Kendall tau | Spearman rho | top-1 regret | seed noise | spread | ' +
          ' | '.join(f'{m} (full {reference[m]:.4f})' for m in shown) + ' |')
    print('|---' * (7 + len(shown)) + '|')
    for name, s in settings.items():
        cells = [f"{s['members'][m]['proxy_mean']:.4f}" if m in s['members'] else '-' for m in shown]
        print(f"| {name} | {len(s['members'])} | {s['kendall_tau']} | {s['spearman_rho']} | {s['top1_regret']} | "
              f"{s['seed_noise']} | {s['spread']} | " + ' | '.join(cells) + ' |')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=2)


if __name__ == '__main__':
    main()
