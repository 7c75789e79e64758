"""``detkds-search dashboard``: optuna-dashboard on the study storage, plus what only the search knows.

optuna-dashboard already shows the study history, each trial's intermediate values (the proxy AP at every
evaluation), user attributes (formula, genome, stage, generation, seed ...) and parameter importances. What it
cannot compute, the search writes into the study before serving, through optuna-dashboard's own channels:

- a note on every trial (Markdown): the formula, the genome key, the proxy metrics and the table of every
  report (iteration, each loss term, AP) - Optuna keeps one intermediate series per trial, which is the AP;
- a study note: best genomes (mean over their COMPLETE evaluations), best per stage, best per generation and
  the baselines evaluated under the same proxy;
- custom plots (plotly figures, rendered by the dashboard's own plotly.js; no plotly package needed here):
  best AP per generation per stream with the baselines as reference lines, AP of every trial by stage, and the
  loss-term curves of the best genome's trial.

Annotation is idempotent: a note or plot is rewritten only when its content changed.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional

import optuna

from distill_core.errors import ConfigError

from . import study as st
from .results import STUDY_EXPORTED, StudyResults, TrialView, baseline_label, results_of, standing_lines
from .storage import mask_url, open_storage, resolve_storage_url

PLOT_GENERATIONS = 'detkds-generations'
PLOT_TRIALS = 'detkds-trials'
PLOT_LOSS_TERMS = 'detkds-loss-terms'
_TOP = 10


class _Figure:
    """The one method optuna_dashboard.save_plotly_graph_object needs from a plotly Figure."""

    def __init__(self, data: List[Dict[str, Any]], layout: Dict[str, Any]):
        self.payload = {'data': data, 'layout': layout}

    def to_json(self) -> str:
        # JSON.parse in the browser rejects NaN/Infinity (a diverged loss): plotly draws a gap for null
        return json.dumps(_finite(self.payload), sort_keys=True, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _fmt(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.4f}'


def _md(text: str) -> str:
    return str(text).replace('|', '\\|').replace('\n', ' ')


# --------------------------------------------------------------------------- notes
def trial_note(results: StudyResults, trial: TrialView) -> str:
    if trial.baseline is not None:
        lines = [f'### Baseline: {baseline_label(trial.baseline)}',
                 f'Reference run under the same proxy as the search (seed {trial.seed}); not a search candidate.']
    else:
        lines = [f'### Trial {trial.number}: stage {trial.stage}, input {trial.input}, generation '
                 f'{trial.generation} ({trial.kind}, seed {trial.seed})',
                 f'**Formula:** `{trial.formula}`', '',
                 f'Genome key `{(trial.key or "")[:16]}`' + (' (interrupted: re-run on resume)'
                                                             if trial.interrupted else '')]
    if trial.reason:
        lines += ['', f'**Reason:** {_md(trial.reason)}']
    if trial.metrics:
        lines += ['', '**Proxy metrics:** ' + ' · '.join(f'{k} {v:.4f}' for k, v in trial.metrics.items())]
    if trial.curve:
        columns = ['iteration'] + results.loss_terms(trial) + sorted(
            {k for row in trial.curve for k in row if k.startswith('AP')})
        lines += ['', '**Curve** (every report of the proxy: loss terms and AP)', '',
                  '| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
        for row in _by_iteration(trial.curve):
            cells = [str(int(row['iteration'])) if 'iteration' in row else '-']
            cells += [f'{row[c]:.4g}' if c in row else '' for c in columns[1:]]
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def study_note(results: StudyResults) -> str:
    lines = [f'## DetKDS search `{_md(results.study)}`', f'Storage: `{results.storage}`']
    config = results.user_attrs.get(st.STUDY_CONFIG)
    if config:
        lines.append(f'Search config: `{config}`')
    exported = results.user_attrs.get(STUDY_EXPORTED)
    if exported:
        lines.append(f'Exported training config of the best distiller: `{exported}`')
    lines += [f'**{_md(line)}**' for line in standing_lines(results)]
    ranked = results.ranked()
    lines += ['', '### Best genomes (mean proxy AP over their COMPLETE evaluations)', '',
              '| rank | AP | trials | stage | formula |', '|---|---|---|---|---|']
    for row in ranked[:_TOP]:
        lines.append(f'| {row.rank} | {row.value:.4f} | {", ".join(map(str, row.trials))} | {row.stage} | '
                     f'{_md(row.formula)} |')
    if not ranked:
        lines.append('| - | - | - | - | no COMPLETE search trial yet |')
    lines += ['', '### Best per stage', '', '| stage | AP | formula |', '|---|---|---|']
    for stage, row in results.stage_bests().items():
        lines.append(f'| {stage} | {row.value:.4f} | {_md(row.formula)} |')
    lines += ['', '### Best proxy AP per generation', '', '| stage | input | generation | best AP | trial |',
              '|---|---|---|---|---|']
    for row in results.generation_bests():
        lines.append(f'| {row.stage} | {row.input} | {row.generation} | {row.value:.4f} | {row.trial} |')
    lines += ['', '### Baselines under the same proxy', '']
    baselines = results.baselines()
    if baselines:
        lines += ['| baseline | AP |', '|---|---|'] + [f'| {baseline_label(k)} | {v:.4f} |'
                                                      for k, v in baselines.items()]
    else:
        lines.append('None evaluated (`detkds-search baselines CONFIG --study NAME`).')
    return '\n'.join(lines) + '\n'


def _by_iteration(curve: List[Dict[str, float]]) -> List[Dict[str, float]]:
    """One row per iteration: the final report repeats the last evaluation's metrics, merge it."""
    rows: Dict[Any, Dict[str, float]] = {}
    for row in curve:
        rows.setdefault(row.get('iteration', len(rows)), {}).update(row)
    return list(rows.values())


# --------------------------------------------------------------------------- plots
def _baseline_traces(results: StudyResults, x0: float, x1: float) -> List[Dict[str, Any]]:
    return [{'type': 'scatter', 'mode': 'lines', 'x': [x0, x1], 'y': [value, value],
             'name': f'{baseline_label(name)} (baseline)', 'line': {'dash': 'dash', 'width': 1.5}}
            for name, value in results.baselines().items()]


def generation_figure(results: StudyResults) -> _Figure:
    series = results.generation_series()
    data = [{'type': 'scatter', 'mode': 'lines+markers', 'name': label,
             'x': [g for g, _ in points], 'y': [v for _, v in points]} for label, points in series.items()]
    last = max((g for points in series.values() for g, _ in points), default=0)
    data += _baseline_traces(results, 0, max(last, 1))
    return _Figure(data, {'title': {'text': 'Best proxy AP per generation (per stage and input)'},
                          'xaxis': {'title': {'text': 'generation'}, 'dtick': 1},
                          'yaxis': {'title': {'text': 'proxy AP'}}})


def trials_figure(results: StudyResults) -> _Figure:
    by_stage: Dict[int, List[TrialView]] = {}
    for trial in results.search_trials():
        if trial.complete and trial.candidate:
            by_stage.setdefault(trial.stage or 1, []).append(trial)
    data = [{'type': 'scatter', 'mode': 'markers', 'name': f'stage {stage}',
             'x': [t.number for t in trials], 'y': [t.value for t in trials],
             'text': [t.formula for t in trials], 'hovertemplate': 'trial %{x}: AP %{y:.4f}<br>%{text}'}
            for stage, trials in sorted(by_stage.items())]
    last = max((t.number for t in results.trials), default=1)
    data += _baseline_traces(results, 0, last)
    return _Figure(data, {'title': {'text': 'Proxy AP of every COMPLETE trial'},
                          'xaxis': {'title': {'text': 'trial number'}},
                          'yaxis': {'title': {'text': 'proxy AP'}}})


def loss_terms_figure(results: StudyResults) -> Optional[_Figure]:
    ranked = results.ranked()
    if not ranked:
        return None
    trial = results.trial(ranked[0].trials[0])
    data = [{'type': 'scatter', 'mode': 'lines+markers', 'name': term,
             'x': [row['iteration'] for row in trial.curve if term in row and 'iteration' in row],
             'y': [row[term] for row in trial.curve if term in row and 'iteration' in row]}
            for term in results.loss_terms(trial)]
    return _Figure(data, {'title': {'text': f'Loss terms of the best genome (trial {trial.number})'},
                          'xaxis': {'title': {'text': 'iteration'}}, 'yaxis': {'title': {'text': 'loss'}}})


# --------------------------------------------------------------------------- writing into the study
def _plot_key(plot_id: str) -> str:
    return f'dashboard:plot_data:{plot_id}:'


def _save_plot(study: optuna.Study, plot_id: str, figure: _Figure) -> bool:
    from optuna_dashboard import save_plotly_graph_object
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects
    current = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id)).get(plot_id)
    if current == figure.to_json():
        return False
    save_plotly_graph_object(study, figure, graph_object_id=plot_id)
    return True


def _save_note(target, body: str) -> bool:
    from optuna_dashboard import get_note, save_note
    if get_note(target) == body:
        return False
    save_note(target, body)
    return True


def annotate_study(study: optuna.Study, storage_shown: str) -> Dict[str, int]:
    """Write notes and plots of the search into ``study``; returns how many of each were (re)written."""
    results = results_of(study, storage_shown)
    written = {'trial_notes': 0, 'study_note': 0, 'plots': 0}
    for trial in results.trials:
        if trial.state in ('RUNNING', 'WAITING'):
            continue   # its note is written when it has finished
        target = optuna.Trial(study, study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, trial.number))
        written['trial_notes'] += _save_note(target, trial_note(results, trial))
    written['study_note'] += _save_note(study, study_note(results))
    figures = {PLOT_GENERATIONS: generation_figure(results), PLOT_TRIALS: trials_figure(results),
               PLOT_LOSS_TERMS: loss_terms_figure(results)}
    for plot_id, figure in figures.items():
        if figure is not None:
            written['plots'] += _save_plot(study, plot_id, figure)
    return written


def is_search_study(study: optuna.Study) -> bool:
    return st.STUDY_PLAN in study.user_attrs


def serve(study: Optional[str] = None, storage: Optional[str] = None, run_dir: Optional[str] = None,
          host: str = '127.0.0.1', port: int = 8080, annotate: bool = True, log=print) -> None:
    """Annotate the search studies in the storage, then serve optuna-dashboard in the foreground."""
    from optuna_dashboard import run_server
    if not storage and not run_dir and not study:
        raise ConfigError('dashboard: give --storage URL, --run-dir or --study (default storage '
                          'runs/<study>/study.journal)')
    run_dir = run_dir or (f'runs/{study}' if study else None)
    url = resolve_storage_url(storage, run_dir or '.')
    backend = open_storage(storage, run_dir)
    names = sorted(s.study_name for s in backend.get_all_studies())
    if study is not None and study not in names:
        raise ConfigError(f'no study {study!r} in {mask_url(url)}')
    if annotate:
        for name in ([study] if study else names):
            optuna_study = st.open_study(backend, name, create=False)
            if study or is_search_study(optuna_study):
                written = annotate_study(optuna_study, mask_url(url))
                log(f'[dashboard] study {name}: wrote {written["trial_notes"]} trial notes, '
                    f'{written["study_note"]} study note, {written["plots"]} plots')
    log(f'[dashboard] serving {mask_url(url)} at http://{host}:{port}/dashboard (Ctrl-C stops)')
    run_server(backend, host=host, port=port)
