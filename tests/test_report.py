"""``detkds-search report``: one self-contained, deterministic HTML page with every stage, trial and baseline."""
import html
import re
import subprocess
import sys

import pytest

from .test_export import GENOME_A, GENOME_B, hand_study


def check_self_contained(page: str) -> None:
    assert '<script' not in page and '<link' not in page and '<img' not in page and '<iframe' not in page
    assert not re.search(r'\b(src|href)\s*=', page) and 'url(' not in page and '@import' not in page
    # the only URL is the SVG namespace name, which is never fetched
    assert set(re.findall(r'https?://[^\s"\'<>]+', page)) <= {'http://www.w3.org/2000/svg'}


def test_report_of_a_hand_written_study(tmp_path):
    from search.report import write_report
    hand_study(tmp_path, [
        (GENOME_A, 0, 'COMPLETE', 0.30),
        (GENOME_B, 0, 'COMPLETE', 0.35, {'stage': 2, 'input': 'combined', 'generation': 0}),
        (GENOME_A, 1, 'FAIL', None, {'fail_reason': 'rejected: non-finite <loss>'}),
        (None, 0, 'COMPLETE', 0.21, {'baseline': 'pkd'}),
    ])
    out = tmp_path / 'r.html'
    write_report('s', str(out), run_dir=str(tmp_path / 'runs' / 's'))
    page = out.read_text()
    check_self_contained(page)
    assert 'id="stage-1"' in page and 'id="stage-2"' in page and page.count('<svg') == 2
    assert 'PKD (baseline) 0.210' in page and 'stroke-dasharray="6 4"' in page       # the reference line
    assert 'rejected: non-finite &lt;loss&gt;' in page                              # escaped, never raw HTML
    assert 'global: catt -&gt; scale_r2 -&gt; norm_N | l1 x6' in page
    first = out.read_bytes()
    write_report('s', str(out), run_dir=str(tmp_path / 'runs' / 's'))
    assert out.read_bytes() == first


@pytest.mark.slow
def test_report_of_the_tiny_search(tiny_results, tmp_path):
    out = tmp_path / 'report.html'
    result = subprocess.run([sys.executable, '-m', 'search.cli', 'report', '--study', tiny_results['study'],
                             '-o', str(out)], cwd=tiny_results['cwd'], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    page = out.read_text()
    check_self_contained(page)
    from search.results import read_results
    results = read_results(tiny_results['study'], run_dir=f'{tiny_results["cwd"]}/runs/{tiny_results["study"]}')
    assert results.stages() == [1, 2]
    for stage in results.stages():
        assert f'id="stage-{stage}"' in page
    for trial in results.trials:        # every trial is in the table
        assert f'<tr><td class="num">{trial.number}</td>' in page
    for name in ('no distillation', 'PKD'):
        assert f'{name} (baseline)' in page
    assert f'<code>{html.escape(results.ranked()[0].formula)}</code>' in page   # the best genome
