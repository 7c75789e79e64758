"""Baselines first: they run before the first exploration trial on the finalists' seeds, are never re-run on
resume, set the bar that status shows; the answer is the best mean, which may be a baseline that export writes."""
import json
import shutil

import optuna
import pytest
from optuna.trial import TrialState

from search.results import STUDY_ANSWER, decide_answer, describe_answer, read_results

from .demo_utils import ROOT
from .test_search_launch import cli, finish, kill_after_finished, load, write_search_config


@pytest.mark.slow
def test_baselines_run_first_on_the_finalists_seeds_and_never_again(tmp_path, shapes_root):
    config = write_search_config(tmp_path, shapes_root, baselines=['none'])
    kill_after_finished(cli(['launch', config, '--study', 's'], cwd=tmp_path),
                        lambda: load(tmp_path).get_trials(deepcopy=False), 4)
    rc, out, err = finish(cli(['launch', config, '--study', 's'], cwd=tmp_path))
    assert rc == 0, err[-4000:]
    trials = load(tmp_path).get_trials(deepcopy=False)
    baselines = [t for t in trials if 'baseline' in t.user_attrs and not t.user_attrs.get('interrupted')]
    search = [t for t in trials if 'baseline' not in t.user_attrs]
    assert sorted(t.user_attrs['seed'] for t in baselines) == [0, 1]   # train_seed and its 1 re-evaluation seed
    assert all(t.state == TrialState.COMPLETE for t in baselines)
    assert max(t.number for t in trials if 'baseline' in t.user_attrs) < min(t.number for t in search)
    status = finish(cli(['status', '--study', 's'], cwd=tmp_path))
    assert status[0] == 0 and 'the bar: no distillation' in status[1] and 'answer: ' in status[1], status
    answer = json.loads(load(tmp_path).user_attrs[STUDY_ANSWER])
    assert answer['bar']['name'] == 'none' and answer['seeds'] == 2
    assert '[search] answer: ' in out
    # the student alone inherits nothing: where the answer's exported strategy inherits the teacher's neck/head
    # (which a short proxy favours), the answer names it as not comparable under the proxy
    from mmengine.config import Config
    inherits = Config.fromfile(str(tmp_path / 'runs' / 's' / 's_best.py')).model.get('inherit_neck_head', False)
    assert answer['inheritance_unlike'] == (['none'] if inherits else [])
    assert ('favours: no distillation (compare after full training)' in status[1]) == bool(inherits), status[1]


def test_a_baseline_no_genome_beats_is_the_answer_and_export_writes_it(tmp_path, tiny_results):
    """tiny_results holds a finished tiny search and the none/pkd baselines under its proxy; PKD is given a
    better mean than every genome on the seeds the finalists were decided on."""
    cwd = tmp_path / 'copy'
    shutil.copytree(tiny_results['cwd'], cwd, symlinks=True)
    study = load(cwd, tiny_results['study'])
    results = read_results(study.study_name, run_dir=str(cwd / 'runs' / study.study_name))
    best = max(r.value for r in results.ranked())
    from search.baselines import strategy_attr
    pkd_recipe = strategy_attr(f'{ROOT}/configs/distillers/pkd/pkd_demo_retinanet.py')   # runs of PKD's recipe
    for seed in (0, 1):
        study.add_trial(optuna.trial.create_trial(
            value=best + 0.05, params={}, distributions={},
            user_attrs={'baseline': 'pkd', 'seed': seed, 'formula': 'PKD', 'strategy': pkd_recipe}))
    results = read_results(study.study_name, run_dir=str(cwd / 'runs' / study.study_name))
    answer = decide_answer(results, [0, 1], lambda genome: None)
    assert answer['kind'] == 'baseline' and answer['name'] == 'pkd' and answer['published']
    assert 'no searched distiller beat it' in describe_answer(answer)
    assert 'favours' not in describe_answer(answer)
    assert describe_answer(dict(answer, inheritance_unlike=['none', 'fgd'])).endswith(
        "no searched distiller beat it; baselines whose recipe differs from it in inheriting the teacher's "
        "neck/head, which a short proxy favours: no distillation, FGD (compare after full training)")
    study.set_user_attr(STUDY_ANSWER, json.dumps(answer))
    out = tmp_path / 'answer.py'
    rc, stdout, err = finish(cli(['export', '--study', study.study_name, '-o', str(out)], cwd=cwd))
    assert rc == 0, err[-3000:]
    text = out.read_text()
    assert 'is the published baseline PKD' in text and "type='PKDLoss'" in text
    assert 'SearchedDistillLoss' not in text
    from mmengine.config import Config
    exported = Config.fromfile(str(out)).model
    assert exported.type == 'DetectionDistiller'
    assert exported.inherit_neck_head is False   # PKD's recipe, although the search's proxy inherits
    # --searched: the best searched genome all the same (what a benchmark trains beside the answer)
    rc, stdout, err = finish(cli(['export', '--study', study.study_name, '--searched'], cwd=cwd))
    assert rc == 0, err[-3000:]
    searched = (cwd / 'runs' / study.study_name / f'{study.study_name}_searched.py').read_text()
    assert 'SearchedDistillLoss' in searched and 'PKDLoss' not in searched
    assert results.ranked()[0].formula.split(';')[0].split(':')[0] in searched

    # the other way round: with the genome ahead, the answer is the searched genome and says so
    answer = decide_answer(read_results(study.study_name, run_dir=str(cwd / 'runs' / study.study_name)), [7],
                           lambda genome: None)
    assert answer['kind'] == 'genome' and not answer['published'] and answer['bar'] is None
    assert describe_answer(answer).startswith('a new formulation: ')
