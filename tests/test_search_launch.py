"""The search service end to end on local Ray: a real tiny search, kill -9 and resume, PRUNED/FAIL records,
and the errors raised before any trial starts."""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from .demo_utils import ROOT, build_teacher_checkpoint

pytestmark = pytest.mark.slow


def write_search_config(tmp_path, shapes_root, baselines=None, **search):
    """A search config small enough for CI: tiny proxies, 2 inputs x 2 generations, population 2."""
    os.makedirs(tmp_path / 'data', exist_ok=True)
    if not osp.exists(tmp_path / 'data' / 'shapes'):
        os.symlink(shapes_root, tmp_path / 'data' / 'shapes')
    teacher_ckpt = build_teacher_checkpoint('retinanet', tmp_path)
    plan = dict(stage1_inputs=['global', 'fg_bg'], population_size=2, generations=2, stage2_population_size=2,
                stage2_generations=1, tournament_size=2, elite_count=1, reeval_top_k=1, reeval_seeds=1, seed=0)
    plan.update(search)
    text = f"""
teacher = dict(config='{ROOT}/configs/demo/retinanet_teacher.py', checkpoint='{teacher_ckpt}')
student = dict(config='{ROOT}/configs/demo/retinanet_student.py')
proxy = dict(train_images=16, val_images=8, subset_seed=0, iterations=4, batch_size=2,
             optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4), grad_clip=35.0, inherit_neck_head=True,
             report_interval=2, eval_interval=2, reject=dict(check_iterations=2, max_loss=1e4))
space = '{ROOT}/search_space.yaml'
search = {plan!r}
scheduler = dict(type='asha', grace_period=1, reduction_factor=2)
resources = dict(cpus_per_trial=1, gpus_per_trial=0, max_concurrent=2)
"""
    if baselines is not None:
        text += f'baselines = {list(baselines)!r}\n'
    path = tmp_path / 'search_config.py'   # not search.py: it would shadow the search package under -m
    path.write_text(text)
    return str(path)


def cli(args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, '-m', 'search.cli'] + args, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)


def finish(proc, timeout=900):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return proc.returncode, out, err


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_after_finished(proc, trials, count: int, timeout: float = 600) -> None:
    """SIGKILL the controller ``proc`` (only it: Ray's processes are its children) once ``trials()`` holds
    ``count`` finished trials; then its whole process group."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            time.sleep(2)
            try:
                done = [t for t in trials() if t.state.is_finished()]
            except (KeyError, FileNotFoundError):   # the study is not in the journal yet
                done = []
            if len(done) >= count:
                break
            assert proc.poll() is None, proc.stderr.read()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        kill_group(proc)


def load(tmp_path, name='s'):
    tmp_path = Path(tmp_path)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / 'runs' / name / 'study.journal')))
    return optuna.load_study(study_name=name, storage=storage)


def check_complete_study(study):
    trials = study.get_trials(deepcopy=False)
    assert trials and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    real = [t for t in trials if not t.user_attrs.get('interrupted')]
    pairs = [(t.user_attrs['key'], t.user_attrs['seed']) for t in real]
    assert len(pairs) == len(set(pairs)), 'a (genome, seed) was evaluated twice'
    for t in real:
        for attr in ('genome', 'formula', 'stage', 'generation', 'seed', 'parents', 'wall_time'):
            assert attr in t.user_attrs, (attr, t.number)
        if t.state == TrialState.COMPLETE:
            assert 0.0 <= t.value <= 1.0
            assert set(t.user_attrs['metrics']) >= {'AP', 'AP50', 'AP75'}
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get('fail_reason')
    # early stopping is for exploration only: a finalist's re-evaluation always runs to the end, and so do the
    # protected explorations (seeds, each generation's first proposal): no stage or generation is left empty
    assert not [t.number for t in real if t.user_attrs['kind'] == 'reeval' and t.state == TrialState.PRUNED]
    assert not [t.number for t in real if t.user_attrs.get('protected') and t.state == TrialState.PRUNED]
    generations = {(t.user_attrs['stage'], t.user_attrs['input'], t.user_attrs['generation'])
                   for t in real if t.user_attrs['kind'] == 'explore'}
    for where in generations:   # ran to its end: COMPLETE, or FAIL when the candidate itself was rejected
        assert [t for t in real if (t.user_attrs['stage'], t.user_attrs['input'], t.user_attrs['generation'])
                == where and t.state != TrialState.PRUNED], where
    progress = json.loads(study.user_attrs['progress'])
    assert progress['finished'] and progress['stage'] == 2
    return real


def test_tiny_search_completes_and_status_reports_it(tiny_search):
    assert tiny_search['returncode'] == 0, tiny_search['stderr'][-4000:]
    out, cwd = tiny_search['stdout'], tiny_search['cwd']
    assert '[search] stage 1' in out and '[search] finished' in out
    real = check_complete_study(load(cwd, tiny_search['study']))
    assert {t.user_attrs['stage'] for t in real} == {1, 2}
    assert {t.user_attrs['input'] for t in real} >= {'global', 'fg_bg', 'combined'}
    rc, out, err = finish(cli(['status', '--study', tiny_search['study'], '--json'], cwd=cwd))
    assert rc == 0, err
    status = json.loads(out)
    assert status['finished'] and status['trials']['running'] == 0 and status['best']['formula']
    rc, out, err = finish(cli(['status', '--study', tiny_search['study']], cwd=cwd))
    assert rc == 0 and 'best: AP' in out


def test_resume_after_sigkill(tmp_path, shapes_root):
    config = write_search_config(tmp_path, shapes_root)
    kill_after_finished(cli(['launch', config, '--study', 's'], cwd=tmp_path),
                        lambda: load(tmp_path).get_trials(deepcopy=False), 3)
    before = load(tmp_path).get_trials(deepcopy=False)
    finished_before = {t.number: t.state for t in before if t.state.is_finished()}
    rc, out, err = finish(cli(['launch', config, '--study', 's'], cwd=tmp_path))
    assert rc == 0, err[-4000:]
    assert 'resuming study' in out
    study = load(tmp_path)
    real = check_complete_study(study)
    for number, state in finished_before.items():   # completed trials are never re-run or rewritten
        assert study.trials[number].state == state
    # the evolution's own bookkeeping agrees with storage: every told trial is one real trial
    counts = json.loads(study.user_attrs['progress'])['counts']
    assert counts['told'] == len(real)   # stage-2 proposals equal to a stage-1 genome are reused, not told


def test_pruned_and_failed_trials_are_recorded_as_such(searcher_setup):
    from distill_core import Genome
    from search.searcher import EvolutionSearcher
    from search.study import TrialBook
    study, space, evolution = searcher_setup
    searcher = EvolutionSearcher(evolution, TrialBook(study, space))
    configs = [searcher.suggest(f't{i}') for i in range(3)]
    assert all(isinstance(c, dict) for c in configs)
    searcher.on_trial_result('t0', {'iteration': 2, 'AP': 0.1})
    searcher.on_trial_complete('t0', {'iteration': 2, 'AP': 0.1})                   # stopped by the scheduler
    searcher.on_trial_complete('t1', {'trial_status': 'FAIL', 'reason': 'rejected: non-finite loss'})
    searcher.on_trial_complete('t2', {'trial_status': 'COMPLETE', 'iteration': 4, 'AP': 0.3, 'AP50': 0.5})
    trials = {t.number: t for t in study.get_trials()}
    assert trials[configs[0]['optuna_trial']].state == TrialState.PRUNED
    assert trials[configs[0]['optuna_trial']].intermediate_values == {2: 0.1}
    failed = trials[configs[1]['optuna_trial']]
    assert failed.state == TrialState.FAIL and failed.user_attrs['fail_reason'] == 'rejected: non-finite loss'
    assert trials[configs[2]['optuna_trial']].value == 0.3
    assert Genome.from_json(trials[configs[2]['optuna_trial']].user_attrs['genome']).formula()
    # the genes are Optuna parameters too (parameter importances in the dashboard)
    assert {'global.t1', 'global.t2', 'global.t3', 'global.distance', 'global.weight'} <= set(
        trials[configs[2]['optuna_trial']].params)
    assert trials[configs[2]['optuna_trial']].params['global.distance'] in space.group_of('global').distances
    best = evolution.best()
    assert best.value == 0.3   # a pruned partial value never wins


def test_expected_new_trials_count_what_a_resumed_study_has_left():
    """What the teacher cache's 'auto' weighs its build against: the plan's remainder, within --max-trials'."""
    from search.controller import expected_new_trials
    assert expected_new_trials(40, 0, None) == 40
    assert expected_new_trials(40, 30, None) == 10     # resumed: 30 already finished
    assert expected_new_trials(40, 30, 4) == 4          # --max-trials leaves 4 new ones
    assert expected_new_trials(40, 45, None) == 1       # nothing left (re-runs only): never 0


def test_errors_before_any_trial(tmp_path, shapes_root):
    config = write_search_config(tmp_path, shapes_root)
    rc, _, err = finish(cli(['launch', config, '--study', 'e', '--ray-address', '127.0.0.1:9'], cwd=tmp_path))
    assert rc == 2 and 'cannot reach the Ray head at 127.0.0.1:9' in err and 'Traceback' not in err
    bad = tmp_path / 'bad.py'
    bad.write_text(open(config).read() + "\nresources = dict(cpus_per_trial=1, gpu_per_trial=0)\n")
    rc, _, err = finish(cli(['launch', str(bad), '--study', 'e'], cwd=tmp_path))
    assert rc == 2 and "unknown key resources.gpu_per_trial (did you mean 'gpus_per_trial'?)" in err
    rc, _, err = finish(cli(['launch', config, '--study', 'e', '--storage', 'postgresql://u:secret@127.0.0.1:9/db'],
                            cwd=tmp_path))
    assert rc == 2 and 'secret' not in err and '***' in err
    rc, _, err = finish(cli(['launch', config, '--study', 'nope', '--resume'], cwd=tmp_path))
    assert rc == 2 and "no study 'nope'" in err


def test_resume_refuses_a_changed_search_space(tmp_path, shapes_root):
    config = write_search_config(tmp_path, shapes_root)
    os.makedirs(tmp_path / 'runs' / 'old')
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / 'runs' / 'old' / 'study.journal')))
    optuna.create_study(study_name='old', storage=storage).set_user_attr('space_hash', '0123456789abcdef')
    rc, _, err = finish(cli(['launch', config, '--study', 'old'], cwd=tmp_path))
    assert rc == 2 and 'was searched with another search space' in err
