"""``detkds-search dashboard``: notes and plots written into the study, the served API, and the page a browser
renders (headless Chromium)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .test_export import GENOME_A, GENOME_B, hand_study

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


def test_notes_and_plots_are_written_once(tmp_path):
    import optuna
    from optuna_dashboard import get_note
    from search.dashboard import PLOT_GENERATIONS, PLOT_LOSS_TERMS, PLOT_TRIALS, annotate_study
    curve = json.dumps([{'iteration': 2, 'loss_cls': 1.5, 'loss_searched_global': 0.25, 'AP': 0.1},
                        {'iteration': 4, 'loss_cls': 1.25, 'loss_searched_global': 0.125, 'AP': 0.3}])
    study, _ = hand_study(tmp_path, [
        (GENOME_A, 0, 'COMPLETE', 0.30, {'curve': curve, 'metrics': {'AP': 0.3, 'AP50': 0.6}}),
        (GENOME_B, 0, 'COMPLETE', 0.20, {'generation': 1}),
        (None, 0, 'COMPLETE', 0.25, {'baseline': 'fgd'}),
    ])
    assert annotate_study(study, 'journal://x') == {'trial_notes': 3, 'study_note': 1, 'plots': 3}
    assert annotate_study(study, 'journal://x') == {'trial_notes': 0, 'study_note': 0, 'plots': 0}  # idempotent
    note = get_note(optuna.Trial(study, study.trials[0]._trial_id))
    assert '**Formula:** `global: catt -> scale_r2 -> norm_N | l1 x6`' in note
    assert '| iteration | loss_cls | loss_searched_global | AP |' in note and '| 4 | 1.25 | 0.125 | 0.3 |' in note
    assert 'Baseline: FGD' in get_note(optuna.Trial(study, study.trials[2]._trial_id))
    study_note = get_note(study)
    assert '| 1 | 0.3000 | 0 | 1 | global: catt -> scale_r2 -> norm_N \\| l1 x6 |' in study_note
    assert '| FGD | 0.2500 |' in study_note and '| 1 | global | 1 | 0.2000 | 1 |' in study_note
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects
    plots = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))
    assert set(plots) == {PLOT_GENERATIONS, PLOT_TRIALS, PLOT_LOSS_TERMS}
    generations = json.loads(plots[PLOT_GENERATIONS])['data']
    assert {t['name']: t['y'] for t in generations} == {'stage 1 · global': [0.3, 0.2],
                                                       'FGD (baseline)': [0.25, 0.25]}
    losses = json.loads(plots[PLOT_LOSS_TERMS])['data']
    assert {t['name']: t['y'] for t in losses} == {'loss_cls': [1.5, 1.25], 'loss_searched_global': [0.25, 0.125]}


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def chromium(args, tmp_path):
    return subprocess.run([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                           '--disable-background-networking', '--disable-component-update', '--disable-sync',
                           f'--user-data-dir={tmp_path / "chromium-profile"}', '--window-size=1280,900',
                           '--virtual-time-budget=8000'] + args,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_dashboard_serves_the_finished_study(tiny_results, tmp_path):
    if CHROMIUM is None:
        message = 'chromium not found; install the Debian package chromium'
        if os.environ.get('CI'):
            pytest.fail(message + ' (scripts/ci_system_deps.sh does this in CI)')
        pytest.skip(message)
    port = free_port()
    proc = subprocess.Popen([sys.executable, '-m', 'search.cli', 'dashboard', '--study', tiny_results['study'],
                             '--port', str(port)], cwd=tiny_results['cwd'], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                studies = get_json(f'{base}/api/studies')['study_summaries']
                break
            except OSError:
                assert time.time() < deadline, 'the dashboard did not answer within 120 s'
                time.sleep(0.5)
        study_id = next(s['study_id'] for s in studies if s['study_name'] == tiny_results['study'])
        detail = get_json(f'{base}/api/studies/{study_id}')
        trials = detail['trials']
        assert len(trials) >= 6 and detail['has_intermediate_values']
        searched = [t for t in trials if any(a['key'] == 'key' for a in t['user_attrs'])]
        assert any(t['intermediate_values'] for t in searched)              # AP at the proxy evaluations
        assert all('**Formula:**' in t['note']['body'] for t in searched)
        assert any('loss_cls' in t['note']['body'] for t in searched)      # loss-term curve table
        baselines = [t for t in trials if any(a['key'] == 'baseline' for a in t['user_attrs'])]
        assert {t['note']['body'].splitlines()[0] for t in baselines} == {'### Baseline: no distillation',
                                                                         '### Baseline: PKD'}
        assert all(len(t['intermediate_values']) == 2 for t in baselines)    # iterations 2 and 4
        assert {p['id'] for p in detail['plotly_graph_objects']} >= {'detkds-generations', 'detkds-trials'}
        assert 'Best proxy AP per generation' in detail['note']['body']

        first = min(t['number'] for t in searched)
        page = f'{base}/dashboard/studies/{study_id}/trials?numbers={first}'
        png = tmp_path / 'trials.png'
        shot = chromium([f'--screenshot={png}', page], tmp_path)
        assert png.exists(), shot.stderr[-2000:]
        from PIL import Image
        with Image.open(png) as image:
            colours = image.convert('RGB').getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50          # not a blank page
        dom = chromium(['--dump-dom', page], tmp_path).stdout
        assert f'{tiny_results["study"]} (id={study_id})' in dom and f'Trial {first}' in dom
        assert 'Intermediate Values' in dom and 'Formula:' in dom
        assert 'Failed to' not in dom and 'Not Found' not in dom    # the UI's fetch-error text, bottle's 404
        if os.environ.get('DETKDS_KEEP_SCREENSHOT'):
            shutil.copyfile(png, os.environ['DETKDS_KEEP_SCREENSHOT'])
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
