"""``detkds-search report``: a finished search as one self-contained static HTML page, for sharing.

The page holds the same views as the dashboard: best proxy AP per generation for every stage and input, the AP
of every trial with the baselines as reference lines, the best genome of each stage, the table of trials
(formula, state, AP) and the path of the exported config. Charts are inline SVG drawn here; the page loads
nothing from anywhere (no script, no stylesheet link, no image URL). Deterministic: the same storage gives a
byte-identical page.
"""
from __future__ import annotations

import html
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import study as st
from .fidelity import STUDY_FIDELITY_RESULT
from .results import STUDY_EXPORTED, StudyResults, baseline_label, read_results, standing_lines

WIDTH, HEIGHT = 820, 320
MARGIN = dict(left=60, right=250, top=34, bottom=44)
# colour-blind-safe palette (Okabe-Ito), then greys for the baselines
COLOURS = ('#0072B2', '#E69F00', '#009E73', '#CC79A7', '#D55E00', '#56B4E9', '#F0E442', '#000000')
BASELINE_COLOURS = ('#555555', '#888888', '#333333', '#aaaaaa', '#777777')

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.95em; background: #f6f6f6; padding: 0 3px; }
.state-COMPLETE { color: #006400; } .state-FAIL { color: #a00000; } .state-PRUNED { color: #8a6d00; }
svg text { font-family: system-ui, sans-serif; }
"""


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    return f'{value:.2f}'.rstrip('0').rstrip('.') if value == value else '0'


def _ticks(low: float, high: float, count: int = 5) -> List[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def svg_chart(title: str, series: Dict[str, Sequence[Tuple[float, float]]], xlabel: str, ylabel: str,
              hlines: Optional[Dict[str, float]] = None, mode: str = 'lines', integer_x: bool = True) -> str:
    """An inline SVG chart: one polyline (or marker set) per series, dashed horizontal reference lines."""
    hlines = hlines or {}
    xs = [x for points in series.values() for x, _ in points] or [0.0, 1.0]
    ys = [y for points in series.values() for _, y in points] + list(hlines.values()) or [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or max(abs(y1) * 0.1, 0.01)
    y0, y1 = (max(y0 - pad, 0.0) if y0 >= 0 else y0 - pad), y1 + pad   # AP is never negative
    left, top = MARGIN['left'], MARGIN['top']
    plot_w, plot_h = WIDTH - left - MARGIN['right'], HEIGHT - top - MARGIN['bottom']

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_esc(title)}">',
             f'<text x="{left}" y="20" font-size="14" font-weight="bold">{_esc(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for y in _ticks(y0, y1):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{_num(py(y))}" y2="{_num(py(y))}" '
                     f'stroke="#eee"/><text x="{left - 6}" y="{_num(py(y) + 4)}" font-size="11" '
                     f'text-anchor="end">{y:.3f}</text>')
    x_ticks = sorted({round(x) for x in xs}) if integer_x and len(set(round(x) for x in xs)) <= 12 \
        else _ticks(x0, x1)
    for x in x_ticks:
        label = str(int(round(x))) if integer_x else f'{x:.3g}'
        parts.append(f'<text x="{_num(px(x))}" y="{top + plot_h + 16}" font-size="11" '
                     f'text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{HEIGHT - 8}" font-size="12" '
                 f'text-anchor="middle">{_esc(xlabel)}</text>')
    parts.append(f'<text x="14" y="{top + plot_h / 2:.0f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{_esc(ylabel)}</text>')
    legend_y = top + 6
    for i, (label, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = [(px(x), py(y)) for x, y in points]
        if mode == 'lines' and len(coords) > 1:
            path = ' '.join(f'{_num(a)},{_num(b)}' for a, b in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for a, b in coords:
            parts.append(f'<circle cx="{_num(a)}" cy="{_num(b)}" r="3.5" fill="{colour}"/>')
        parts.append(f'<rect x="{WIDTH - MARGIN["right"] + 12}" y="{legend_y - 8}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{WIDTH - MARGIN["right"] + 27}" y="{legend_y + 1}" '
                     f'font-size="11">{_esc(label)}</text>')
        legend_y += 16
    for i, (label, value) in enumerate(hlines.items()):
        colour = BASELINE_COLOURS[i % len(BASELINE_COLOURS)]
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{_num(py(value))}" y2="{_num(py(value))}" '
                     f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"/>')
        parts.append(f'<line x1="{WIDTH - MARGIN["right"] + 10}" x2="{WIDTH - MARGIN["right"] + 24}" '
                     f'y1="{legend_y - 3}" y2="{legend_y - 3}" stroke="{colour}" stroke-width="1.5" '
                     f'stroke-dasharray="4 2"/><text x="{WIDTH - MARGIN["right"] + 27}" y="{legend_y + 1}" '
                     f'font-size="11">{_esc(label)} {value:.3f}</text>')
        legend_y += 16
    if not series:
        parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h / 2:.0f}" font-size="12" '
                     'text-anchor="middle" fill="#777">no COMPLETE trial</text>')
    parts.append('</svg>')
    return '\n'.join(parts)


def _baselines(results: StudyResults) -> Dict[str, float]:
    return {f'{baseline_label(k)} (baseline)': v for k, v in results.baselines().items()}


def _table(header: Optional[Sequence[str]], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = '<thead><tr>' + ''.join(f'<th>{_esc(h)}</th>' for h in header) + '</tr></thead>' if header else ''
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ''
            cells.append(f'<td{cls}>{cell}</td>')
        body.append('<tr>' + ''.join(cells) + '</tr>')
    return f'<table>{head}<tbody>' + ''.join(body) + '</tbody></table>'


def _ap(value: Optional[float]) -> str:
    return '' if value is None else f'{value:.4f}'


def _fidelity_section(summary: Mapping[str, Any]) -> List[str]:
    """Proxy vs reference AP per member (one marker series per proxy setting), the training-free score vs the
    reference, and the table of every setting's correlations, regrets, noise and cost."""
    from .fidelity import format_fidelity
    out = ['<h2>Proxy fidelity</h2>',
           f'<p>Reference: {_esc(summary["reference"])}; {summary["complete_members"]} of {summary["members"]} '
           f'members measured; cheapest setting with Kendall tau &ge; {summary["threshold"]}: '
           f'<b>{_esc(summary.get("chosen") or "none")}</b>.</p>']
    series = {label: [(row['reference_ap'], row['proxy'][label]['mean']) for row in summary['panel']
                      if row['reference_ap'] is not None and row['proxy'][label]['mean'] is not None]
              for label in summary['settings']}
    out.append(svg_chart('Proxy AP (mean over seeds) vs reference AP, one point per panel member', series,
                         'reference AP', 'proxy AP', mode='markers', integer_x=False))
    zero = [(row['reference_ap'], row['gradient_alignment']) for row in summary['panel']
            if row['reference_ap'] is not None and row['gradient_alignment'] is not None]
    out.append(svg_chart('Training-free score (gradient alignment) vs reference AP', {'gradient alignment': zero},
                         'reference AP', 'score', mode='markers', integer_x=False))
    out.append(f'<pre>{_esc(format_fidelity(summary))}</pre>')
    return out


def render_report(results: StudyResults) -> str:
    ranked = results.ranked()
    attrs = results.user_attrs
    out: List[str] = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
                      f'<title>DetKDS search {_esc(results.study)}</title>', f'<style>{STYLE}</style>',
                      '</head><body>', f'<h1>DetKDS search <code>{_esc(results.study)}</code></h1>']
    facts = [('storage', f'<code>{_esc(results.storage)}</code>'),
             ('search config', f'<code>{_esc(attrs.get(st.STUDY_CONFIG, "-"))}</code>'),
             ('exported config', f'<code>{_esc(attrs.get(STUDY_EXPORTED, "not exported yet"))}</code>'),
             ('trials', _esc(', '.join(f'{sum(t.state == s for t in results.trials)} {s.lower()}'
                                       for s in ('COMPLETE', 'PRUNED', 'FAIL', 'RUNNING')))),
             ('best', f'AP {ranked[0].value:.4f}: <code>{_esc(ranked[0].formula)}</code>' if ranked else 'none')]
    facts += [('against the bar' if i == 0 and not line.startswith('answer') else 'answer', _esc(line))
              for i, line in enumerate(standing_lines(results))]
    out.append(_table(None, [(f'<b>{k}</b>', v) for k, v in facts]))
    fidelity = attrs.get(STUDY_FIDELITY_RESULT)
    if fidelity:
        out.extend(_fidelity_section(json.loads(fidelity)))

    out.append('<h2>Best proxy AP per generation</h2>')
    series = {label: [(float(g), v) for g, v in points] for label, points in results.generation_series().items()}
    out.append(svg_chart('Best proxy AP per generation (per stage and input)', series, 'generation',
                         'proxy AP', _baselines(results)))
    out.append('<h2>Every trial</h2>')
    by_stage: Dict[str, List[Tuple[float, float]]] = {}
    for trial in results.search_trials():
        if trial.candidate and trial.complete:
            by_stage.setdefault(f'stage {trial.stage or 1}', []).append((float(trial.number), trial.value))
    out.append(svg_chart('Proxy AP of every COMPLETE trial', dict(sorted(by_stage.items())), 'trial number',
                         'proxy AP', _baselines(results), mode='markers'))

    out.append('<h2>Stages</h2>')
    stage_bests = results.stage_bests()
    generations = results.generation_bests()
    for stage in results.stages():
        best = stage_bests.get(stage)
        out.append(f'<h3 id="stage-{stage}">Stage {stage}</h3>')
        out.append(f'<p>Best genome: AP {best.value:.4f} (trials {", ".join(map(str, best.trials))}): '
                   f'<code>{_esc(best.formula)}</code></p>' if best else '<p>No COMPLETE trial in this stage.</p>')
        rows = [(_esc(g.input), str(g.generation), f'{g.value:.4f}', str(g.trial))
                for g in generations if g.stage == stage]
        out.append(_table(['input', 'generation', 'best AP', 'trial'], rows, numeric=(1, 2, 3)))

    out.append('<h2>Baselines under the same proxy</h2>')
    baselines = results.baselines()
    out.append(_table(['baseline', 'proxy AP'], [(_esc(baseline_label(k)), f'{v:.4f}') for k, v in baselines.items()],
                      numeric=(1,)) if baselines else '<p>None evaluated.</p>')

    out.append('<h2>Best genomes</h2>')
    out.append(_table(['rank', 'mean AP', 'trials', 'stage', 'formula'],
                      [(str(r.rank), f'{r.value:.4f}', ', '.join(map(str, r.trials)), str(r.stage),
                        f'<code>{_esc(r.formula)}</code>') for r in ranked[:20]], numeric=(0, 1)))
    out.append('<h2>Trials</h2>')
    rows = []
    for t in results.trials:
        what = f'baseline: {baseline_label(t.baseline)}' if t.baseline is not None else t.formula
        state = t.state + (' (interrupted)' if t.interrupted else '')
        rows.append((str(t.number), '' if t.stage is None else str(t.stage), _esc(t.input),
                     '' if t.generation is None else str(t.generation), _esc(t.kind),
                     '' if t.seed is None else str(t.seed), f'<span class="state-{t.state}">{_esc(state)}</span>',
                     _ap(t.value), f'<code>{_esc(what)}</code>' + (f'<br>{_esc(t.reason)}' if t.reason else '')))
    out.append(_table(['#', 'stage', 'input', 'gen', 'kind', 'seed', 'state', 'AP', 'formula / reason'], rows,
                      numeric=(0, 1, 3, 5, 7)))
    out.append('</body></html>')
    return '\n'.join(out) + '\n'


def write_report(study: str, out: str, storage: Optional[str] = None, run_dir: Optional[str] = None) -> str:
    from .export import write_atomic
    write_atomic(out, render_report(read_results(study, storage, run_dir)))
    return out
