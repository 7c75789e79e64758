"""Baselines under the search's proxy: which distiller configs they use, and the trials they leave in a study."""
import os.path as osp

import pytest

from distill_core.errors import ConfigError

from .demo_utils import ROOT

DEMO_STUDENT = osp.join(ROOT, 'configs', 'demo', 'retinanet_student.py')


def test_names_resolve_to_the_shipped_demo_configs_of_the_pair():
    from search.baselines import DEFAULT_BASELINES, baseline_specs, distill_losses_of
    raw = {'student': {'config': DEMO_STUDENT}}
    specs = baseline_specs(raw, 'cfg.py')
    # the defaults with a shipped demo config for the RetinaNet pair (BCKD ships for GFL only)
    assert tuple(specs) == tuple(n for n in DEFAULT_BASELINES if n != 'bckd') and specs['none'] is None
    for name in ('fgd', 'mgd', 'pkd', 'crosskd'):
        assert specs[name] == osp.join(ROOT, 'configs', 'distillers', name, f'{name}_demo_retinanet.py')
    assert distill_losses_of(specs['pkd']) == [dict(name='pkd', levels=[0, 1, 2, 3],
                                                    loss=dict(type='PKDLoss', loss_weight=2.0))]
    assert distill_losses_of(None) is None
    assert list(baseline_specs(dict(raw, baselines=['none', 'pkd']), 'cfg.py')) == ['none', 'pkd']
    assert list(baseline_specs(raw, 'cfg.py', names=['mgd'])) == ['mgd']


def test_a_non_demo_pair_must_name_its_method_configs(tmp_path):
    from search.baselines import baseline_specs
    raw = {'student': {'config': 'configs/coco/retinanet_r50_fpn_2x_coco.py'}}
    with pytest.raises(ConfigError, match="no shipped config for this \\(non-demo\\) pair"):
        baseline_specs(dict(raw, baselines=['none', 'fgd']), 'cfg.py')
    fgd = osp.join(ROOT, 'configs', 'distillers', 'fgd', 'fgd_retinanet_r101_r50_2x_coco.py')
    assert baseline_specs(dict(raw, baselines={'none': None, 'fgd': fgd}), 'cfg.py') == {'none': None, 'fgd': fgd}
    with pytest.raises(ConfigError, match='baselines.fgd: distiller config not found'):
        baseline_specs(dict(raw, baselines={'fgd': str(tmp_path / 'missing.py')}), 'cfg.py')
    with pytest.raises(ConfigError, match="baselines \\['gkd'\\] are not defined"):
        baseline_specs(dict(raw, baselines={'none': None}), 'cfg.py', names=['gkd'])


def test_each_baseline_trains_its_published_recipe(tmp_path, shapes_root):
    """Its losses and its config's strategy, not the proxy's: the demo PKD trains without the teacher's neck/head,
    FGD with them, the student alone inherits nothing, although the proxy inherits (proxy.inherit_neck_head)."""
    import json
    from search.baselines import baseline_genome, baseline_specs, baseline_strategy, distill_losses_of, strategy_attr
    from search.config import load_search_config
    from workers.proxy import build_distiller, distill_losses_for
    from workers.settings import check_search_config
    from .demo_utils import build_teacher_checkpoint, tiny_proxy
    raw = tiny_proxy(load_search_config(osp.join(ROOT, 'configs/search/demo_faster_rcnn.py')).raw, shapes_root,
                     build_teacher_checkpoint('faster_rcnn', tmp_path))
    settings = check_search_config(raw)
    assert settings.inherit_neck_head is True
    specs = baseline_specs(raw, 'cfg.py', ['none', 'pkd', 'fgd'])
    assert [baseline_strategy(specs[n]).inherit_neck_head for n in ('none', 'pkd', 'fgd')] == [False, False, True]
    assert json.loads(strategy_attr(specs['pkd'])) == dict(inherit_neck_head=False, warmup=0.0, decay='none')
    for name, inherits in (('none', False), ('pkd', False), ('fgd', True)):
        genome = baseline_genome(specs[name])
        assert distill_losses_for(genome) == []   # a strategy alone: the method's losses come separately
        model = build_distiller(raw, genome, settings, ROOT, distill_losses_of(specs[name]))
        assert bool(model.inherited_keys) is inherits, name
        assert {key.split('_fpn')[0] for key in model.distill_losses} == {
            entry['name'] for entry in distill_losses_of(specs[name]) or []}   # one module per level


def test_a_run_of_the_recipe_supersedes_one_of_the_proxys_strategy():
    """Runs recorded before recipes were honoured (no `strategy`: the proxy's) count as done only where the proxy's
    strategy is the recipe's, and a run of the recipe supersedes them."""
    import optuna
    from search.baselines import has_recipe_run, strategy_attr
    from search.results import results_of
    pkd = osp.join(ROOT, 'configs', 'distillers', 'pkd', 'pkd_demo_retinanet.py')
    study = optuna.create_study(direction='maximize')
    for value, attrs in ((0.30, {}), (0.20, {'strategy': strategy_attr(pkd)}), (0.50, {})):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={},
                                                  user_attrs=dict(baseline='pkd', seed=0, formula='PKD', **attrs)))
    inheriting_proxy = {'proxy': {'inherit_neck_head': True}}
    assert has_recipe_run(study, strategy_attr(pkd), inheriting_proxy, baseline='pkd', seed=0)
    assert not has_recipe_run(study, strategy_attr(pkd), inheriting_proxy, baseline='pkd', seed=1)
    fgd = osp.join(ROOT, 'configs', 'distillers', 'fgd', 'fgd_demo_retinanet.py')
    # FGD's recipe inherits: a run without a recorded strategy trained it under an inheriting proxy only
    assert has_recipe_run(study, strategy_attr(fgd), inheriting_proxy, baseline='pkd', seed=0)
    assert not has_recipe_run(study, strategy_attr(fgd), {'proxy': {'inherit_neck_head': False}},
                              baseline='pkd', seed=0)
    assert results_of(study, '').baseline_runs() == {'pkd': {0: 0.20}}


@pytest.mark.slow
def test_baseline_trials_train_the_method_under_the_proxy(tiny_results):
    from search.results import read_results
    from search.study import replay_records
    results = read_results(tiny_results['study'], run_dir=f'{tiny_results["cwd"]}/runs/{tiny_results["study"]}')
    runs = {}
    for trial in results.trials:
        if trial.baseline is not None:
            runs.setdefault(trial.baseline, []).append(trial)
    assert set(runs) == {'none', 'pkd'} and set(tiny_results['baselines']) == {'none', 'pkd'}
    for name, trials in runs.items():   # on the seeds the finalists are decided on: train_seed + 1 re-evaluation
        assert sorted(t.seed for t in trials) == [0, 1]
        assert all(t.complete and t.key is None and t.curve for t in trials)
        mean = sum(t.value for t in trials) / len(trials)
        assert mean == pytest.approx(tiny_results['baselines'][name])
    from search.baselines import baseline_specs, strategy_attr
    specs = baseline_specs({'student': {'config': DEMO_STUDENT}}, 'cfg.py', ['none', 'pkd'])
    for name, trials in runs.items():   # each trained its own recipe (the demo PKD: no inheritance)
        assert {t.strategy for t in trials} == {strategy_attr(specs[name])}
    baselines = {name: trials[0] for name, trials in runs.items()}
    assert not [t for t in results.loss_terms(baselines['none']) if 'pkd' in t]
    assert 'loss_pkd_fpn0' in results.loss_terms(baselines['pkd'])       # PKD's loss was trained
    assert results.baselines() == pytest.approx(tiny_results['baselines'])
    # the evolution's replay and the export ranking ignore them
    from search.results import open_results_study
    study, _ = open_results_study(tiny_results['study'], run_dir=f'{tiny_results["cwd"]}/runs/{tiny_results["study"]}')
    assert len(replay_records(study)) == len([t for t in results.trials if t.baseline is None])
    assert all(r.trials[0] not in {t.number for trials in runs.values() for t in trials} for r in results.ranked())
