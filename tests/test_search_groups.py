"""Shared-teacher groups: K candidates per Ray Tune trial (``resources.candidates_per_trial``).

The config key and its 'auto' resolution (incl. the GPU memory arithmetic), the trainable's merged reports, the
searcher's grouping and routing of results to each candidate's Optuna trial, and real tiny searches on local Ray
(a group reproduces single trials; a rejected candidate does not stop its group)."""
import glob
import json
import os
import os.path as osp
import types

import optuna
import pytest
from optuna.trial import TrialState

from distill_core.errors import ConfigError
from distill_core.genome import Genome, Term
from search.config import load_search_config, resolve_candidates_per_trial
from search.evolution import Evolution, StagePlan
from search.operators import build_ops
from search.searcher import EvolutionSearcher, ExplorationASHA, TrialRetryRecorder
from search.space import Space
from search.study import TrialBook, open_study
from workers.group_size import CPU_GROUP_SIZE, first_published_genome, group_size_from_memory, probe_group_size
from workers.tune_trial import GroupReporter, candidate_result, trial_candidates

from .demo_utils import ROOT

GiB = 2 ** 30
ASHA = dict(type='asha', grace_period=1, reduction_factor=2)


# ----------------------------------------------------------------------------------------- config
def test_resolution_of_candidates_per_trial():
    cpu, gpu = dict(gpus_per_trial=0), dict(gpus_per_trial=0.5)
    assert resolve_candidates_per_trial(dict(cpu, candidates_per_trial=3), None) == 3
    assert resolve_candidates_per_trial(dict(cpu, candidates_per_trial=1), ASHA) == 1   # 1 is fine with ASHA
    assert resolve_candidates_per_trial(dict(cpu, candidates_per_trial='auto'), ASHA) == 1
    assert resolve_candidates_per_trial(dict(gpu, candidates_per_trial='auto'), ASHA, probe=lambda: 5) == 1
    assert resolve_candidates_per_trial(dict(cpu, candidates_per_trial='auto'), None) == CPU_GROUP_SIZE == 2
    assert resolve_candidates_per_trial(dict(cpu), None) == 2                           # 'auto' is the default
    assert resolve_candidates_per_trial(dict(gpu, candidates_per_trial='auto'), None, probe=lambda: 5) == 5
    assert resolve_candidates_per_trial(dict(gpu, candidates_per_trial='auto'), {}, probe=lambda: 5) == 5
    with pytest.raises(ConfigError, match=r"cfg.py: resources.candidates_per_trial = 2 cannot be combined with "
                                          r"a `scheduler` section"):
        resolve_candidates_per_trial(dict(cpu, candidates_per_trial=2), ASHA, 'cfg.py')
    for bad in (0, -1, 1.5, True, '2', 'AUTO', None):
        with pytest.raises(ConfigError, match=r"cfg.py: resources.candidates_per_trial must be an integer >= 1 "
                                              r"or 'auto'"):
            resolve_candidates_per_trial(dict(cpu, candidates_per_trial=bad), None, 'cfg.py')


@pytest.fixture(scope='module')
def config_text(tmp_path_factory, shapes_root):
    from .test_search_launch import write_search_config
    path = write_search_config(tmp_path_factory.mktemp('cfg'), shapes_root)
    with open(path) as f:
        return f.read()


def test_search_config_checks_candidates_per_trial(config_text, tmp_path):
    def load(resources, scheduler=True):
        text = config_text + f'\nresources = dict(cpus_per_trial=1, max_concurrent=2, {resources})\n'
        if not scheduler:
            text += 'scheduler = None\n'
        path = tmp_path / 'config.py'
        path.write_text(text)
        return load_search_config(str(path)), str(path)

    cfg, _ = load('candidates_per_trial=1')
    assert cfg.resources['candidates_per_trial'] == 1
    cfg, _ = load('', scheduler=False)
    assert cfg.resources['candidates_per_trial'] == 'auto'
    assert resolve_candidates_per_trial(cfg.resources, cfg.scheduler, cfg.source) == 2
    cfg, _ = load("candidates_per_trial='auto'")      # with the config's ASHA scheduler
    assert resolve_candidates_per_trial(cfg.resources, cfg.scheduler, cfg.source) == 1
    with pytest.raises(ConfigError) as err:
        load('candidates_per_trial=2')
    path = str(tmp_path / 'config.py')
    assert str(err.value).startswith(f'{path}: resources.candidates_per_trial = 2 cannot be combined with a '
                                     '`scheduler` section')
    with pytest.raises(ConfigError, match=r"resources.candidates_per_trial must be an integer >= 1 or 'auto', "
                                          r"got 0"):
        load('candidates_per_trial=0', scheduler=False)
    with pytest.raises(ConfigError, match="unknown key resources.candidate_per_trial \\(did you mean "
                                          "'candidates_per_trial'\\?\\)"):
        load('candidate_per_trial=2', scheduler=False)


# ----------------------------------------------------------------------------------------- group size
def test_group_size_from_memory_arithmetic():
    # 80 GiB free, 80 % usable = 64 GiB; teacher + batch 10 GiB; 5 GiB per student: floor(54 / 5) = 10 -> max_k
    assert group_size_from_memory(80 * GiB, 10 * GiB, 5 * GiB) == 8
    assert group_size_from_memory(80 * GiB, 10 * GiB, 5 * GiB, max_k=16) == 10
    # half a GPU per trial: 32 GiB usable - 4 GiB shared = 28 GiB -> 5 students of 5 GiB
    assert group_size_from_memory(80 * GiB, 4 * GiB, 5 * GiB, gpu_fraction=0.5) == 5
    # several GPUs per trial: the proxy uses one, its free memory is the budget
    assert group_size_from_memory(20 * GiB, 2 * GiB, 3 * GiB, gpu_fraction=2.0) == 4
    assert group_size_from_memory(20 * GiB, 2 * GiB, 3 * GiB, headroom=0.5) == 2
    # not even one student fits next to the teacher: still 1 (the trial itself decides whether it runs)
    assert group_size_from_memory(10 * GiB, 9 * GiB, 5 * GiB) == 1
    # a student of no measurable size
    assert group_size_from_memory(10 * GiB, 1 * GiB, 0) == 8
    with pytest.raises(ValueError):
        group_size_from_memory(10 * GiB, 1 * GiB, 1 * GiB, max_k=0)


def test_probe_without_cuda_uses_the_cpu_rule():
    import torch
    assert not torch.cuda.is_available()   # this branch only: the CUDA branch needs a GPU (not in CI)
    assert probe_group_size({'proxy': {}}, '.') == CPU_GROUP_SIZE == 2


def test_probe_runs_a_two_step_proxy_with_one_held_out_batch(config_text, tmp_path):
    """What the CUDA probe trains (twice: K=1 and K=2) is a valid proxy of the search's own settings."""
    from workers.group_size import PROBE_ITERATIONS, _probe_config
    from workers.settings import check_search_config
    path = tmp_path / 'config.py'
    path.write_text(config_text)
    raw = load_search_config(str(path)).raw
    settings = check_search_config(_probe_config(raw))
    assert settings.iterations == PROBE_ITERATIONS == 2 and settings.eval_interval is None
    assert settings.val_images == settings.eval_batch_size == raw['proxy']['batch_size']
    assert settings.optimizer == raw['proxy']['optimizer'] and raw['proxy']['iterations'] == 4   # not modified


def test_probe_genome_is_the_first_published_one_valid_for_the_family():
    space = Space.default()
    first = next(iter(space.published.values()))
    assert first_published_genome(space, 'retinanet') == first
    space.published = {}
    assert first_published_genome(space, 'retinanet') is None   # the student alone


# ----------------------------------------------------------------------------------------- reports
def test_group_reports_merge_per_iteration_and_the_last_carries_every_status():
    """Callbacks in the order run_proxy_group makes them: per iteration, candidates in order (a failed one no
    longer reports)."""
    from workers.proxy import TrialRejected
    sent = []
    reporter = GroupReporter(3, last_iteration=6, send=sent.append)
    c0, c1, c2 = (reporter.callback(k) for k in range(3))
    c0({'iteration': 2, 'loss': 1.0})
    c1({'iteration': 2, 'loss': 2.0})
    assert sent == []                                        # c2 has not reported iteration 2 yet
    c2({'iteration': 2, 'loss': 3.0})
    assert sent == [{'iteration': 2, 'c0/loss': 1.0, 'c1/loss': 2.0, 'c2/loss': 3.0}]
    # c1 is rejected at iteration 3: iteration 4 waits for it until iteration 6 starts, then goes without it
    c0({'iteration': 4, 'loss': 0.5, 'AP': 0.1})
    c2({'iteration': 4, 'loss': 2.5, 'AP': 0.2})
    assert len(sent) == 1
    c0({'iteration': 6, 'loss': 0.4, 'AP': 0.3})
    assert sent[1] == {'iteration': 4, 'c0/loss': 0.5, 'c0/AP': 0.1, 'c2/loss': 2.5, 'c2/AP': 0.2}
    c2({'iteration': 6, 'loss': 2.4, 'AP': 0.4})
    assert len(sent) == 2                                    # the last iteration waits for the statuses
    try:
        raise TrialRejected('exploding loss_searched_global = 1e+12 > reject.max_loss = 1e4 at iteration 3')
    except TrialRejected as exc:
        rejected = exc
    reporter.close([({'AP': 0.3, 'AP50': 0.5}, None), ({}, rejected), ({'AP': 0.4, 'AP50': 0.6}, None)])
    assert sent[2] == {'iteration': 6, 'c0/loss': 0.4, 'c0/AP': 0.3, 'c0/AP50': 0.5, 'c0/trial_status': 'COMPLETE',
                       'c1/trial_status': 'FAIL',
                       'c1/reason': 'rejected: exploding loss_searched_global = 1e+12 > reject.max_loss = 1e4 at '
                                    'iteration 3',
                       'c2/loss': 2.4, 'c2/AP': 0.4, 'c2/AP50': 0.6, 'c2/trial_status': 'COMPLETE'}
    assert candidate_result(sent[2], 1, 3) == {'trial_status': 'FAIL', 'reason': sent[2]['c1/reason']}
    assert candidate_result(sent[2], 2, 3) == {'iteration': 6, 'loss': 2.4, 'AP': 0.4, 'AP50': 0.6,
                                               'trial_status': 'COMPLETE'}
    assert candidate_result(sent[1], 1, 3) == {}


def test_single_candidate_reports_keep_the_flat_form():
    sent = []
    reporter = GroupReporter(1, last_iteration=4, send=sent.append)
    report = reporter.callback(0)
    report({'iteration': 2, 'loss': 1.0, 'AP': 0.1})
    assert sent == [{'iteration': 2, 'loss': 1.0, 'AP': 0.1}]   # at once: the scheduler reads it
    report({'iteration': 4, 'loss': 0.9, 'AP': 0.2})
    reporter.close([({'AP': 0.2}, None)])
    assert sent[1] == {'iteration': 4, 'loss': 0.9, 'AP': 0.2, 'trial_status': 'COMPLETE'}
    # a crash before any report: the status alone, the reason names the error and where it was raised
    sent.clear()
    reporter = GroupReporter(1, last_iteration=4, send=sent.append)
    try:
        {}['missing']
    except KeyError as exc:
        reporter.close([({}, exc)])
    assert sent == [{'trial_status': 'FAIL', 'reason': "KeyError: 'missing' (at test_search_groups.py:"
                                                       f"{sent[0]['reason'].rsplit(':', 1)[-1]}"}]
    assert sent[0]['reason'].rsplit(':', 1)[-1].rstrip(')').isdigit()
    assert trial_candidates({'genome': 'g', 'seed': 0}) == [{'genome': 'g', 'seed': 0}]


# ----------------------------------------------------------------------------------------- searcher
def test_searcher_groups_ready_proposals_and_routes_each_candidates_results(searcher_setup, tmp_path):
    study, space, evolution = searcher_setup
    searcher = EvolutionSearcher(evolution, TrialBook(study, space), candidates_per_trial=2)
    group = searcher.suggest('t0')
    assert set(group) == {'candidates', 'seed'} and len(group['candidates']) == 2 and group['seed'] == 0
    assert [c['seed'] for c in group['candidates']] == [0, 0]
    single = searcher.suggest('t1')           # one proposal left: a group of one, in the flat form
    assert 'candidates' not in single and {'genome', 'seed', 'optuna_trial', 'proposal', 'kind'} <= set(single)
    assert searcher.suggest('t2') is None     # nothing ready: never waits to fill a group
    assert searcher.started == 3
    numbers = [c['optuna_trial'] for c in group['candidates']] + [single['optuna_trial']]
    assert len(set(numbers)) == 3

    searcher.on_trial_result('t0', {'iteration': 2, 'c0/loss': 1.5, 'c0/AP': 0.1, 'c1/loss': 2.5,
                                    'training_iteration': 1})
    searcher.on_trial_result('t0', {'iteration': 4, 'c0/loss': 1.0, 'c0/AP': 0.3, 'c0/AP50': 0.5,
                                    'c0/trial_status': 'COMPLETE', 'c1/trial_status': 'FAIL',
                                    'c1/reason': 'rejected: non-finite loss'})
    # the retry recorder marks every candidate of a restarted group
    error_file = tmp_path / 'error.txt'
    error_file.write_text('Failure # 1 (occurred at 2026-01-01)\nTraceback (most recent call last):\n'
                          '  File "x.py", line 1\nRuntimeError: the node died\n')
    from ray.tune.experiment import Trial
    trial = Trial('proxy_trainable', config=group, stub=True, trial_id='t0')
    trial.run_metadata.error_filename = error_file.name
    trial.run_metadata.num_failures = 1
    trial.storage = types.SimpleNamespace(trial_driver_staging_path=str(tmp_path))   # where Tune keeps it
    TrialRetryRecorder(searcher).on_trial_recover(0, [trial], trial)
    searcher.on_trial_result('t0', {'iteration': 4, 'c0/loss': 1.0, 'c0/AP': 0.3, 'c0/AP50': 0.5,
                                    'c0/trial_status': 'COMPLETE', 'c1/trial_status': 'FAIL',
                                    'c1/reason': 'rejected: non-finite loss'})
    searcher.on_trial_complete('t0', {'iteration': 4, 'c0/loss': 1.0, 'c0/AP': 0.3, 'c0/AP50': 0.5,
                                      'c0/trial_status': 'COMPLETE', 'c1/trial_status': 'FAIL',
                                      'c1/reason': 'rejected: non-finite loss'})
    searcher.on_trial_complete('t1', None, error=True)
    trials = {t.number: t for t in study.get_trials()}
    ok, rejected, crashed = (trials[n] for n in numbers)
    assert ok.state == TrialState.COMPLETE and ok.value == 0.3 and ok.user_attrs['metrics'] == {'AP': 0.3,
                                                                                                   'AP50': 0.5}
    assert ok.intermediate_values == {2: 0.1, 4: 0.3}
    # the curve restarted with the retry: only the new attempt's report
    assert json.loads(ok.user_attrs['curve']) == [{'iteration': 4.0, 'loss': 1.0, 'AP': 0.3, 'AP50': 0.5}]
    assert rejected.state == TrialState.FAIL and rejected.user_attrs['fail_reason'] == 'rejected: non-finite loss'
    assert json.loads(rejected.user_attrs['curve']) == []   # no loss or AP after the restart
    for t in (ok, rejected):
        assert len(t.user_attrs['ray_retries']) == 1 and 'RuntimeError: the node died' in t.user_attrs['ray_retries'][0]
    assert crashed.state == TrialState.FAIL and 'crashed in Ray' in crashed.user_attrs['fail_reason']
    assert Genome.from_json(ok.user_attrs['genome']) != Genome.from_json(rejected.user_attrs['genome'])
    assert evolution.finished and evolution.best().value == 0.3
    assert searcher.suggest('t3') == 'FINISHED'


def test_a_crashed_group_fails_every_candidate_and_the_budget_caps_a_group(searcher_setup):
    study, space, evolution = searcher_setup
    searcher = EvolutionSearcher(evolution, TrialBook(study, space), candidates_per_trial=3, max_new_trials=2)
    group = searcher.suggest('t0')
    assert len(group['candidates']) == 2      # K = 3 but 2 trials left in the budget
    assert searcher.suggest('t1') is None
    searcher.on_trial_complete('t0', {'iteration': 4, 'c0/AP': 0.3, 'c0/trial_status': 'COMPLETE'}, error=True)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.FAIL]
    assert all('crashed in Ray' in t.user_attrs['fail_reason'] for t in study.get_trials())
    assert searcher.suggest('t2') == 'FINISHED'


def test_the_result_that_ends_a_trial_is_recorded_once(searcher_setup):
    study, space, evolution = searcher_setup
    searcher = EvolutionSearcher(evolution, TrialBook(study, space))
    stopped, seen = searcher.suggest('t0'), searcher.suggest('t1')
    searcher.on_trial_result('t0', {'iteration': 2, 'AP': 0.1, 'loss': 2.0, 'training_iteration': 1})
    # a scheduler stopping a trial on its last report: Tune hands that report to on_trial_complete only
    searcher.on_trial_complete('t0', {'iteration': 4, 'AP': 0.2, 'loss': 1.0, 'trial_status': 'COMPLETE',
                                      'training_iteration': 2})
    # without a scheduler the last report reaches both
    last = {'iteration': 4, 'AP': 0.3, 'loss': 1.0, 'trial_status': 'COMPLETE', 'training_iteration': 1}
    searcher.on_trial_result('t1', last)
    searcher.on_trial_complete('t1', dict(last))
    first, second = (study.trials[c['optuna_trial']] for c in (stopped, seen))
    assert first.intermediate_values == {2: 0.1, 4: 0.2} and first.value == 0.2
    assert [row['iteration'] for row in json.loads(first.user_attrs['curve'])] == [2.0, 4.0]
    assert json.loads(second.user_attrs['curve']) == [{'iteration': 4.0, 'AP': 0.3, 'loss': 1.0}]


def test_schedulers_never_stop_a_group():
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
    asha = ExplorationASHA(max_t=8, grace_period=2, reduction_factor=2, time_attr='iteration', metric='AP',
                           mode='max')
    strong = Trial('x', config={'genome': 'a', 'seed': 0, 'kind': 'explore'}, stub=True)
    weak = Trial('x', config={'genome': 'b', 'seed': 0, 'kind': 'explore'}, stub=True)
    group = Trial('x', config={'candidates': [{'genome': 'c', 'seed': 0, 'kind': 'explore'}] * 2, 'seed': 0},
                  stub=True)
    for trial in (strong, weak, group):
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, strong, {'iteration': 2, 'AP': 0.9}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, weak, {'iteration': 2, 'AP': 0.1}) == TrialScheduler.STOP
    assert asha.on_trial_result(None, group, {'iteration': 2, 'AP': 0.1}) == TrialScheduler.CONTINUE


# ----------------------------------------------------------------------------------------- real searches
@pytest.fixture(scope='module')
def local_ray():
    import ray
    os.environ.setdefault('TUNE_DISABLE_STRICT_METRIC_CHECKING', '1')
    os.environ.setdefault('RAY_AIR_NEW_OUTPUT', '0')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level='ERROR')
    yield
    ray.shutdown()


def load_study(run_dir, name):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(osp.join(run_dir, 'study.journal'))))
    return optuna.load_study(study_name=name, storage=storage)


def ray_trial_configs(run_dir, name):
    """The config of every Ray Tune trial of a launch (Tune keeps one params.json per trial)."""
    configs = []
    for path in sorted(glob.glob(osp.join(run_dir, 'ray', name, '*', 'params.json'))):
        with open(path) as f:
            configs.append(json.load(f))
    return configs


@pytest.mark.slow
def test_tiny_search_with_two_candidates_per_trial(local_ray, tmp_path, shapes_root, monkeypatch):
    from search.controller import Launch
    from workers.proxy import run_proxy_trial

    from .test_search_launch import check_complete_study, write_search_config
    monkeypatch.chdir(tmp_path)   # relative data paths of the config resolve here
    # per input: 2 explorations (seed 0), then both re-evaluated (seed 1); the evolution's asks take an input's
    # proposals first, so each input's pair of a seed is ready at once and fills a group
    path = write_search_config(tmp_path, shapes_root, generations=1, stage2_generations=0, reeval_top_k=2)
    text = open(path).read()
    assert "scheduler = dict(type='asha'" in text
    open(path, 'w').write(text + "scheduler = None\nresources = dict(cpus_per_trial=1, gpus_per_trial=0, "
                                 "max_concurrent=2, candidates_per_trial='auto')\n")
    lines = []
    run_dir = str(tmp_path / 'runs' / 'g')
    summary = Launch(path, study='g', run_dir=run_dir, log=lines.append).run()
    assert summary['finished'], lines
    assert '[search] 2 candidates per trial (shared teacher)' in lines

    study = load_study(run_dir, 'g')
    assert study.user_attrs['candidates_per_trial'] == 2
    real = check_complete_study(study)
    # generation 0 of each input: 2 genomes, plus every published formulation the population does not hold
    assert len(real) >= 8 and all(t.state == TrialState.COMPLETE for t in real)
    configs = ray_trial_configs(run_dir, 'g')
    groups = [c['candidates'] for c in configs if 'candidates' in c]
    singles = [c['optuna_trial'] for c in configs if 'candidates' not in c]   # an odd one out of its seed's batch
    assert len(configs) < len(real), configs   # fewer Ray trials than Optuna trials: candidates share teachers
    assert sorted([c['optuna_trial'] for g in groups for c in g] + singles) == sorted(t.number for t in real)
    assert {c['seed'] for c in configs} == {0, 1}
    groups = [g for g in groups if len(g) == 2]   # the pairs: one seed, two students
    assert len(groups) >= 2
    by_number = {t.number: t for t in real}
    for group in groups:
        assert len({c['seed'] for c in group}) == 1
        members = [by_number[c['optuna_trial']] for c in group]
        curves = [json.loads(t.user_attrs['curve']) for t in members]
        for t, curve in zip(members, curves):
            assert [row['iteration'] for row in curve] == [2.0, 4.0] and curve[-1]['AP'] == t.value
            assert t.intermediate_values[4] == t.value and t.user_attrs['genome']
        assert curves[0][0]['loss'] != curves[1][0]['loss']   # two students, two genomes

    # a group's second candidate equals a single trial of its (genome, seed): same seed, same result
    candidate = groups[0][1]
    single = run_proxy_trial(load_search_config(path).raw, candidate['genome'], candidate['seed'],
                             base_dir=str(tmp_path))
    assert single.metrics['AP'] == pytest.approx(by_number[candidate['optuna_trial']].value, abs=1e-6)


class FixedGeneration:
    """Stage-1 ops whose generation 0 is exactly the given genomes (population size = their count)."""

    def __init__(self, ops, genomes):
        self.ops, self.genomes = ops, list(genomes)

    def seeds(self):
        return list(self.genomes)

    def key(self, genome):
        return self.ops.key(genome)

    def sample(self, rng):
        raise AssertionError('generation 0 is the fixed genomes only')

    mutate = crossover = sample


@pytest.mark.slow
def test_a_rejected_candidate_fails_alone_in_its_group(local_ray, tmp_path, shapes_root):
    from ray import tune

    from workers.tune_trial import proxy_trainable

    from .demo_utils import build_teacher_checkpoint
    from .test_workers_proxy import search_config
    cfg = search_config(build_teacher_checkpoint('retinanet', tmp_path), shapes_root, iterations=4,
                        report_interval=2, eval_interval=2)
    space = Space.default()
    stage1, _ = build_ops(space, ['global'])
    exploding = Genome((Term('global', transforms=(), distance='l2', weight=1e12),))
    fine = Genome((Term('global', transforms=(), distance='l2', weight=1.0),))
    evolution = Evolution(StagePlan(stage1_inputs=('global',), population_size=2, generations=1,
                                    stage2_generations=0, reeval_top_k=0, elite_count=0, tournament_size=2),
                          {'global': FixedGeneration(stage1['global'], [exploding, fine])})
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / 'j')))
    study = open_study(storage, 'r')
    searcher = EvolutionSearcher(evolution, TrialBook(study), candidates_per_trial=2)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(proxy_trainable, search_cfg=cfg, base_dir=ROOT), {'cpu': 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=1),
        run_config=tune.RunConfig(name='r', storage_path=str(tmp_path / 'ray'), verbose=0))
    grid = tuner.fit()
    assert len(grid) == 1 and evolution.finished
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs['fail_reason'].startswith('rejected: exploding loss_searched_global')
    assert json.loads(trials[0].user_attrs['curve']) == []
    assert 0.0 <= trials[1].value <= 1.0
    assert [row['iteration'] for row in json.loads(trials[1].user_attrs['curve'])] == [2.0, 4.0]
    last = grid[0].metrics
    assert last['c0/trial_status'] == 'FAIL' and last['c1/trial_status'] == 'COMPLETE'
