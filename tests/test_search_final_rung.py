"""The final rung: the best finalists and baselines re-trained under a fuller proxy decide the answer; its runs
never enter the evolution's replay or the proxy rankings, a relaunch never re-runs them, and export writes the
finalist the rung chose even where the proxy ranked another first."""
import json
import shutil

import optuna
import pytest

from distill_core.errors import ConfigError
from search.final_rung import FinalRung, pick_finalists
from search.results import STUDY_ANSWER, decide_answer, describe_answer, read_results, standing_lines
from search.study import STUDY_CONFIG, replay_records

from .test_search_launch import cli, finish, load

RAW = dict(teacher=dict(config='t.py', checkpoint='t.pth'), student=dict(config='s.py'),
           proxy=dict(train_images=16, val_images=8, iterations=4, batch_size=2), search=dict())


def test_the_section_is_checked_before_any_trial():
    assert FinalRung.from_config(RAW, 'cfg.py') is None
    rung = FinalRung.from_config(dict(RAW, final_rung=dict(proxy=dict(iterations=12, lr_steps=[0.75]))), 'cfg.py')
    assert (rung.genomes, rung.baselines) == (2, 2)
    assert rung.search_config(RAW)['proxy'] == dict(RAW['proxy'], iterations=12, lr_steps=[0.75])
    assert RAW['proxy']['iterations'] == 4   # the search's own proxy is untouched
    for section, message in ((dict(proxy=dict(iterations=8), genome=1), r'unknown key final_rung\.genome'),
                             (dict(proxy=dict()), r'final_rung\.proxy must name what'),
                             (dict(proxy=dict(iteratons=8)), r'final_rung\.proxy\): proxy\.iteratons: unknown key'),
                             (dict(proxy=dict(iterations=8), genomes=0), r'final_rung\.genomes must be >= 1'),
                             (dict(proxy=dict(iterations=8), baselines=-1), r'final_rung\.baselines must be'),
                             ([1], r'final_rung must be a dict')):
        with pytest.raises(ConfigError, match=message):
            FinalRung.from_config(dict(RAW, final_rung=section), 'cfg.py')


def _add_final_run(study, finalist, kind, seed, value, genome=None, state=None):
    attrs = {'rung': 'final', 'finalist': finalist, 'finalist_kind': kind, 'seed': seed, 'formula': finalist}
    if genome is not None:
        attrs['genome'] = json.dumps(genome)
    if state is None:
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs=attrs))
    else:
        study.add_trial(optuna.trial.create_trial(state=state, params={}, distributions={}, user_attrs=attrs))


@pytest.fixture
def copied(tmp_path, tiny_results):
    cwd = tmp_path / 'copy'
    shutil.copytree(tiny_results['cwd'], cwd, symlinks=True)
    return cwd, tiny_results['study']


@pytest.mark.slow
def test_the_final_rung_decides_and_export_writes_its_choice(copied):
    """Hand-written final-rung results over a real finished search: the proxy's runner-up wins the rung, so it
    is the answer and the exported genome; a tie with the best baseline goes to the baseline; a finalist with a
    failed run is out."""
    cwd, name = copied
    study = load(cwd, name)
    run_dir = str(cwd / 'runs' / name)
    results = read_results(name, run_dir=run_dir)
    rung = FinalRung(proxy=dict(iterations=8), genomes=2, baselines=1)
    finalists = pick_finalists(results, rung, [0, 1])
    genomes = [f for f in finalists if f.kind == 'genome']
    assert len(genomes) == 2 and genomes[0].name == results.decided_winner()
    assert [f.kind for f in finalists] == ['genome', 'genome', 'baseline']
    baseline_means = {n: sum(r.values()) / len(r) for n, r in results.baseline_runs().items()}
    assert finalists[2].name == max(baseline_means, key=baseline_means.get)
    replayed = len(replay_records(study))

    first, second = genomes
    for seed in (0, 1):
        _add_final_run(study, first.name, 'genome', seed, 0.30, first.genome)
        _add_final_run(study, second.name, 'genome', seed, 0.40 + 0.02 * seed, second.genome)
        _add_final_run(study, 'none', 'baseline', seed, 0.35)
    results = read_results(name, run_dir=run_dir)
    assert len(replay_records(study)) == replayed   # never part of the evolution
    assert results.baselines() == pytest.approx(baseline_means) and results.ranked()[0].key == first.name
    answer = decide_answer(results, [0, 1], lambda genome: None)
    assert answer['decided_by'] == 'final' and answer['key'] == second.name
    assert answer['value'] == pytest.approx(0.41) and answer['bar']['name'] == 'none'
    assert answer['margin'] == pytest.approx(0.06)
    assert 'final-rung AP 0.4100' in describe_answer(answer)
    rung_line = next(line for line in standing_lines(results) if line.startswith('final rung: '))
    assert rung_line.index('0.4100') < rung_line.index('no distillation 0.3500') < rung_line.index('0.3000')
    study.set_user_attr(STUDY_ANSWER, json.dumps(answer))
    out = cwd / 'answer.py'
    rc, _, err = finish(cli(['export', '--study', name, '-o', str(out)], cwd=cwd))
    assert rc == 0, err[-3000:]
    text = out.read_text()
    assert f'genome key {second.name[:16]}' in text and '# final rung:    AP 0.4100' in text

    # only the latest rung's finalists decide (an earlier launch's, e.g. a baseline of another recipe, are out)
    study.set_user_attr('final_rung_finalists', json.dumps([first.name, 'none']))
    kept = decide_answer(read_results(name, run_dir=run_dir), [0, 1], lambda genome: None)
    assert kept['kind'] == 'baseline' and kept['name'] == 'none' and second.name not in json.dumps(kept)
    study.set_user_attr('final_rung_finalists', json.dumps([first.name, second.name, 'none', 'pkd']))

    # a failed run takes a finalist out (the runner-up, and `none`); the baseline wins a tie (the incumbent)
    _add_final_run(study, second.name, 'genome', 2, None, second.genome, state=optuna.trial.TrialState.FAIL)
    _add_final_run(study, 'none', 'baseline', 2, None, state=optuna.trial.TrialState.FAIL)
    for seed in (0, 1):
        _add_final_run(study, 'pkd', 'baseline', seed, 0.30)
    answer = decide_answer(read_results(name, run_dir=run_dir), [0, 1], lambda genome: None)
    assert answer['kind'] == 'baseline' and answer['name'] == 'pkd' and answer['value'] == pytest.approx(0.30)
    assert 'final-rung AP' in describe_answer(answer) and 'no searched distiller beat it' in describe_answer(answer)


@pytest.mark.slow
def test_a_relaunch_runs_the_final_rung_once(copied):
    """A finished study relaunched with a `final_rung` section and one more baseline runs that baseline first,
    then trains the rung (Ray tasks, real proxies), decides the answer there and exports it; a second relaunch
    runs nothing."""
    cwd, name = copied
    config = cwd / 'with_final_rung.py'
    source = open(read_results(name, run_dir=str(cwd / 'runs' / name)).user_attrs[STUDY_CONFIG]).read()
    source += "baselines = ['none', 'pkd', 'fgd']\n"
    config.write_text(source + "final_rung = dict(proxy=dict(iterations=6, lr_steps=[0.5]), genomes=2, "
                               "baselines=1)\n")
    rc, out, err = finish(cli(['launch', str(config), '--study', name], cwd=cwd))
    assert rc == 0, err[-4000:]
    assert '[baselines] 2 proxy runs first' in out and '[final rung] 6 runs under the fuller proxy' in out, out[-3000:]
    study = load(cwd, name)
    fgd = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get('baseline') == 'fgd']
    assert sorted(t.user_attrs['seed'] for t in fgd) == [0, 1] and all(t.user_attrs.get('strategy') for t in fgd)
    assert max(t.number for t in fgd) < min(t.number for t in study.get_trials(deepcopy=False)
                                             if t.user_attrs.get('rung') == 'final')
    runs = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get('rung') == 'final']
    assert len(runs) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in runs)
    assert sorted(t.user_attrs['seed'] for t in runs) == [0, 0, 0, 1, 1, 1]
    assert all(json.loads(t.user_attrs['curve'])[-1]['iteration'] == 6 for t in runs)   # the rung's proxy
    answer = json.loads(study.user_attrs[STUDY_ANSWER])
    assert answer['decided_by'] == 'final' and '[search] answer: ' in out and 'final-rung AP' in out
    assert len(json.loads(study.user_attrs['final_rung_finalists'])) == 3
    exported = (cwd / 'runs' / name / f'{name}_best.py').read_text()
    assert ('SearchedDistillLoss' in exported) == (answer['kind'] == 'genome')
    rc, out, err = finish(cli(['launch', str(config), '--study', name], cwd=cwd))
    assert rc == 0 and 'already evaluated' in out, err[-3000:]
    assert sum(t.user_attrs.get('rung') == 'final' for t in load(cwd, name).get_trials(deepcopy=False)) == 6
    # other rung settings must not mix with the stored runs: said in one line, nothing run, the answer kept
    config.write_text(source + "final_rung = dict(proxy=dict(iterations=8), genomes=2, baselines=1)\n")
    rc, out, err = finish(cli(['launch', str(config), '--study', name], cwd=cwd))
    assert rc == 0 and 'final rung stopped: ' in out and 'ran its final rung with other settings' in out, out[-2000:]
    assert sum(t.user_attrs.get('rung') == 'final' for t in load(cwd, name).get_trials(deepcopy=False)) == 6
    assert json.loads(load(cwd, name).user_attrs[STUDY_ANSWER]) == answer
