"""Early stopping never leaves a stage, an input's generation or a finalist without complete evaluations.

The searcher, the evolution, the storage and Ray Tune's ASHA make their real decisions on a small plan with an
aggressive scheduler (reduction factor 4, a milestone after the first iteration); only the proxies' AP curves
are synthetic, so the run takes a second and reproduces the demo's failure on purpose: every stage-2 combination
scores below the stage-1 genomes at the milestone (the demo's fresh `make demo` pruned every stage-2 trial).
"""
import random

import optuna
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from distill_core.genome import Genome, TrainingStrategy
from search.evolution import Evolution, StagePlan
from search.operators import build_ops
from search.searcher import EvolutionSearcher, build_scheduler
from search.space import Space
from search.study import TrialBook, open_study

ITERATIONS = 4
PLAN = StagePlan(stage1_inputs=('global', 'fg_bg'), population_size=4, generations=2, stage2_population_size=3,
                 stage2_generations=2, tournament_size=2, elite_count=1, reeval_top_k=2, reeval_seeds=1)


def proxy_ap(config, iteration):
    """A learning curve per genome: stage-2 combinations (several terms) level off far below stage-1 genomes."""
    genome = Genome.from_json(config['genome'])
    level = random.Random(config['genome']).uniform(0.3, 0.9)
    if len(genome.terms) > 1:
        level *= 0.1
    return level * iteration / ITERATIONS


def run_search(tmp_path, scheduler):
    space = Space.default()
    stage1, stage2 = build_ops(space, PLAN.stage1_inputs, 'retinanet', default_strategy=TrainingStrategy(True))
    evolution = Evolution(PLAN, stage1, stage2)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / 'j')))
    study = open_study(storage, 's')
    searcher = EvolutionSearcher(evolution, TrialBook(study, space))
    for number in range(500):   # one trial at a time, each run until its end or until the scheduler stops it
        trial_id = f't{number}'
        config = searcher.suggest(trial_id)
        if config == Searcher.FINISHED:
            break
        assert config is not None   # sequential: the evolution never waits for stragglers
        trial = Trial('proxy', config=config, stub=True)
        scheduler.on_trial_add(None, trial)
        for iteration in range(1, ITERATIONS + 1):
            result = {'iteration': iteration, 'AP': proxy_ap(config, iteration)}
            if iteration == ITERATIONS:
                result['trial_status'] = 'COMPLETE'
            searcher.on_trial_result(trial_id, result)
            if iteration == ITERATIONS:
                scheduler.on_trial_complete(None, trial, result)
            elif scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                scheduler.on_trial_remove(None, trial)
                break
        searcher.on_trial_complete(trial_id, result)
    assert evolution.finished
    return evolution, study.get_trials(deepcopy=False)


def test_every_stage_generation_and_finalist_has_complete_evaluations(tmp_path):
    asha = build_scheduler(dict(type='asha', grace_period=1, reduction_factor=4), ITERATIONS, eval_interval=1)
    evolution, trials = run_search(tmp_path, asha)
    assert [t for t in trials if t.state == TrialState.PRUNED], 'the scheduler stopped nothing: not aggressive'
    assert not [t.number for t in trials if t.user_attrs['protected'] and t.state == TrialState.PRUNED]
    generations = {}
    for t in trials:
        if t.user_attrs['kind'] == 'explore':
            where = (t.user_attrs['stage'], t.user_attrs['input'], t.user_attrs['generation'])
            generations.setdefault(where, []).append(t.state)
    assert {where[:2] for where in generations} == {(1, 'global'), (1, 'fg_bg'), (2, 'combined')}
    assert len(generations) == 6                   # 2 generations x (2 stage-1 inputs + stage 2)
    for where, states in generations.items():
        assert TrialState.COMPLETE in states, where
    assert all(t.state == TrialState.COMPLETE for t in trials if t.user_attrs['kind'] == 'reeval')
    records = {}
    for record in evolution.records():
        records.setdefault(record.key, []).append(record.state)
    for stream in evolution.streams:   # every finalist: evaluated with 2 seeds, both to the end
        assert len(stream.finalists) == PLAN.reeval_top_k, stream.name
        for key in stream.finalists:
            assert records[key] == ['COMPLETE'] * 2, (stream.name, records[key])
    assert [t for t in trials if t.user_attrs['stage'] == 2 and t.state == TrialState.COMPLETE
            and len(Genome.from_json(t.user_attrs['genome']).active_terms) == 2]   # combined weights trained
    winner2 = evolution.stage2_winner()
    assert winner2.stage == 2 and winner2.evaluations == 2   # stage 2 decided on re-evaluated combinations
    best = evolution.best()   # the answer: the best mean of the contenders, each over its 2 seeds
    assert best.evaluations == 2 and best.key in {c.key for c in evolution.contenders()}
    assert best.value == max(c.value for c in evolution.contenders())


def test_without_the_protection_the_scheduler_empties_stage_2(tmp_path):
    """The same run under Ray's plain ASHA (no protected trials): no stage-2 trial completes, so no combination
    of weights is trained to the end and the answer is a single stage-1 formulation, as in the demo the issue
    reports."""
    plain = ASHAScheduler(max_t=ITERATIONS, grace_period=1, reduction_factor=4, time_attr='iteration',
                          metric='AP', mode='max')
    evolution, trials = run_search(tmp_path, plain)
    stage2 = [t for t in trials if t.user_attrs['stage'] == 2]
    assert stage2 and not [t for t in stage2 if t.state == TrialState.COMPLETE]
    assert len(evolution.best().genome.active_terms) == 1
