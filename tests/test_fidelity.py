"""``detkds-search fidelity`` on a tiny panel: real proxy, reference and training-free runs on local Ray,
statistics from the stored trials, resume after SIGKILL without re-running a finished run, one-line errors."""
import json

import pytest
from optuna.trial import TrialState

from search.fidelity_stats import fidelity_summary, kendall_tau

from .test_search_launch import cli, finish, kill_after_finished, load, write_search_config

ARGS = ['--panel', '4', '--seeds', '1', '--reference', 'full', '--proxy', 'iterations=1,2']


def fidelity_config(tmp_path, shapes_root):
    path = write_search_config(tmp_path, shapes_root, baselines=['none'])
    with open(path, 'a') as f:   # the reference: a (very short) full training, tested on the val split
        f.write("full_training = dict(max_iters=2, val_interval=2, batch_size=2)\n")
    return path


def _runs(study):
    return [(json.loads(t.user_attrs['fidelity']), t) for t in study.get_trials(deepcopy=False)
            if 'fidelity' in t.user_attrs]


@pytest.mark.slow
def test_fidelity_resumes_after_sigkill_and_reports_from_real_trials(tmp_path, shapes_root):
    config = fidelity_config(tmp_path, shapes_root)
    kill_after_finished(cli(['fidelity', config, '--study', 'f'] + ARGS, cwd=tmp_path),
                        lambda: [t for _, t in _runs(load(tmp_path, 'f'))], 4)
    finished_before = {t.number: (t.state, t.value) for _, t in _runs(load(tmp_path, 'f')) if t.state.is_finished()}
    assert len(finished_before) >= 4

    rc, out, err = finish(cli(['fidelity', config, '--study', 'f'] + ARGS, cwd=tmp_path))
    assert rc == 0, err[-4000:]
    assert 'runs done' in out and 'Kendall tau' in out
    study = load(tmp_path, 'f')
    runs = _runs(study)
    for number, (state, value) in finished_before.items():   # never re-run or rewritten
        assert study.trials[number].state == state and study.trials[number].value == value
    real = [(run, t) for run, t in runs if not t.user_attrs.get('interrupted')]
    keys = [(r['kind'], r['member'], r['setting'], r['seed']) for r, _ in real]
    assert len(keys) == len(set(keys)), 'a run was made twice'
    for member in ('none', 'random_03'):   # each reference trained its own full-training config
        assert (tmp_path / 'runs' / 'f' / 'reference' / member / 'final.pth').is_file()
    # 4 members x (1 training-free + 1 reference + 2 proxy settings x 1 seed)
    assert len(keys) == 16 and all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for _, t in real)

    summary = json.loads((tmp_path / 'runs' / 'f' / 'fidelity.json').read_text())
    assert [m['kind'] for m in summary['panel']] == ['baseline', 'published', 'published', 'random']
    value = {k: (t.value if t.state == TrialState.COMPLETE else 0.0) for k, (_, t) in zip(keys, real)}
    for member in summary['panel']:
        assert member['reference_ap'] == value[('reference', member['name'], 'full_training', 0)]
        assert member['gradient_alignment'] == value[('gradient_alignment', member['name'],
                                                      'gradient_alignment', 0)]
    assert summary['panel'][0]['gradient_alignment'] == 0.0   # the student alone has no distillation gradient
    assert all(m['gradient_alignment'] != 0.0 for m in summary['panel'][1:])
    reference = [m['reference_ap'] for m in summary['panel']]
    for label in ('iterations=1', 'iterations=2'):
        aps = [[value[('proxy', m['name'], label, 0)]] for m in summary['panel']]
        assert [m['proxy'][label]['aps'] for m in summary['panel']] == aps
        expected = fidelity_summary(aps, reference)
        for key in ('kendall_tau', 'spearman_rho', 'kendall_tau_top_half', 'top1_regret', 'top3_regret'):
            assert summary['settings'][label][key] == pytest.approx(expected[key], nan_ok=True) \
                if expected[key] is not None else summary['settings'][label][key] is None
        assert summary['settings'][label]['seconds'] > 0
    scores = [m['gradient_alignment'] for m in summary['panel']]
    assert summary['zero_cost']['gradient_alignment'].get('kendall_tau') == (
        pytest.approx(kendall_tau(scores, reference)) if kendall_tau(scores, reference) is not None else None)
    assert (tmp_path / 'runs' / 'f' / 'fidelity.md').read_text().startswith('Proxy fidelity of')

    status = finish(cli(['status', '--study', 'f'], cwd=tmp_path))
    assert status[0] == 0 and 'fidelity: 16/16 runs done' in status[1], status
    report = finish(cli(['report', '--study', 'f', '-o', str(tmp_path / 'r.html')], cwd=tmp_path))
    assert report[0] == 0, report[2][-2000:]
    html = (tmp_path / 'r.html').read_text()
    assert 'Proxy fidelity' in html and 'Proxy AP (mean over seeds) vs reference AP' in html


def test_bad_proxy_setting_is_a_one_line_error_before_any_training(tmp_path, shapes_root):
    config = fidelity_config(tmp_path, shapes_root)
    for bad, message in ((['--proxy', 'iteratons=20'], "unknown proxy key 'iteratons'"),
                         (['--proxy', 'iterations=20,0'], 'proxy.iterations'),
                         (['--reference', 'long'], '--reference must be')):
        rc, out, err = finish(cli(['fidelity', config, '--study', 'bad'] + bad, cwd=tmp_path), timeout=120)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'runs' / 'bad').exists()   # nothing created before the arguments were checked



def test_fidelity_baselines_train_their_recipe_and_runs_of_another_recipe_do_not_count(tmp_path, shapes_root):
    """A baseline member trains its published recipe (PKD's demo config does not inherit the teacher's neck/head,
    the proxy does; the student alone inherits nothing) in its proxy, training-free and reference runs. A stored
    run that records no strategy (before recipes were honoured) trained the proxy's: it does not count for PKD, nor
    does a run recording another recipe; a run recording PKD's recipe and a genome member's run do."""
    import optuna

    from distill_core.genome import Genome
    from search.baselines import baseline_specs, strategy_attr
    from search.config import load_search_config
    from search.fidelity import Fidelity, Member, Run
    from search.storage import open_storage

    config = fidelity_config(tmp_path, shapes_root)
    with open(config, 'a') as f:
        f.write("baselines = ['none', 'pkd']\n")
    fid = Fidelity(config, study='f', run_dir=str(tmp_path / 'runs' / 'f'), panel=3, seeds=1, log=lambda _: None)
    pkd, none = Member('pkd', 'baseline', baseline='pkd'), Member('none', 'baseline', baseline='none')
    for member in (pkd, none):
        for kind in ('proxy', 'gradient_alignment'):
            strategy = Genome.parse(fid._task(Run(kind, member.name, 'config proxy', 0), member)['genome']).strategy
            assert strategy is not None and strategy.inherit_neck_head is False, (member, kind)
    assert [e['loss']['type'] for e in fid._task(Run('proxy', 'pkd', 'config proxy', 0), pkd)['distill_losses']] \
        == ['PKDLoss']
    reference = fid._task(Run('reference', 'pkd', 'full_training', 0), pkd)
    from mmengine.config import Config
    assert Config.fromfile(reference['config']).model.inherit_neck_head is False

    study = optuna.create_study(storage=open_storage(None, str(tmp_path / 'runs' / 'g')), study_name='g',
                                direction='maximize')

    def stored(member, seed, strategy=None):
        attrs = {'fidelity': json.dumps(dict(kind='proxy', member=member, setting='setting', seed=seed))}
        if strategy is not None:
            attrs['strategy'] = strategy
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs=attrs))

    pkd_recipe = strategy_attr(baseline_specs(load_search_config(config).raw, config, ['pkd'])['pkd'])
    stored('pkd', 0)                                            # legacy: trained the proxy's inheritance
    stored('pkd', 1, pkd_recipe)
    stored('none', 0, pkd_recipe.replace('false', 'true'))      # another recipe than the student alone's
    stored('random_02', 0)                                      # a genome member: no recipe to check
    done = fid._finished(study, {m.name: m for m in (pkd, none, Member('random_02', 'random', genome='{}'))})
    assert sorted(key[1:] for key in done) == [('pkd', 'setting', 1), ('random_02', 'setting', 0)]
