"""Export of the searched distiller: a standalone training config that trains, transfers and loads in plain
MMDetection; ranking by mean over COMPLETE evaluations; deterministic output; the full_training section."""
import json
import os
import os.path as osp
import subprocess
import sys

import optuna
import pytest
import torch
from mmengine.config import Config

from distill_core.errors import ConfigError

from .demo_utils import ROOT

STUDENT_CONFIG = osp.join(ROOT, 'configs', 'demo', 'retinanet_student.py')


def run_cli(args, cwd, timeout=600):
    result = subprocess.run([sys.executable, '-m', 'search.cli'] + args, cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stdout, result.stderr


# --------------------------------------------------------------------------- fast: a study written by hand
GENOME_A = {'terms': {'global': dict(transforms=['catt', 'scale_r2', 'norm_N'], distance='l1', weight=6)}}
GENOME_B = {'terms': {'fg_bg': dict(transforms=['no', 'local_s4', 'norm_HW'], distance='l1', weight=2)}}


def hand_study(tmp_path, rows, full_training="dict(max_iters=300)"):
    """A journal study with the attributes the controller writes; rows: (genome, seed, state, value[, extra])."""
    from distill_core import Genome
    from search.storage import open_storage
    from search.study import open_study
    config = tmp_path / 'search_config.py'
    config.write_text(f"""
teacher = dict(config='{ROOT}/configs/demo/retinanet_teacher.py', checkpoint='work_dirs/teacher.pth')
student = dict(config='{STUDENT_CONFIG}')
proxy = dict(train_images=16, val_images=8, iterations=4, batch_size=2, inherit_neck_head=True)
search = dict(stage1_inputs=['global'], population_size=2, generations=1)
full_training = {full_training}
""")
    study = open_study(open_storage(None, str(tmp_path / 'runs' / 's')), 's')
    study.set_user_attr('config', str(config))
    for genome, seed, state, value, *extra in rows:
        trial = study.ask()
        attrs = dict(seed=seed, stage=1, input='global', generation=0, kind='explore')
        if genome is not None:
            genome = Genome.parse(genome)
            attrs.update(genome=genome.to_json(), formula=genome.formula(), key=genome.key())
        attrs.update(extra[0] if extra else {})
        for name, attr in attrs.items():
            trial.set_user_attr(name, attr)
        if state == 'COMPLETE':
            study.tell(trial, value)
        else:
            study.tell(trial, state=getattr(optuna.trial.TrialState, state))
    return study, str(config)


def test_ranking_is_the_mean_over_complete_evaluations(tmp_path):
    from search.results import read_results
    hand_study(tmp_path, [
        (GENOME_A, 0, 'COMPLETE', 0.30),
        (GENOME_B, 0, 'COMPLETE', 0.35),
        (GENOME_A, 1, 'COMPLETE', 0.50),          # A: mean 0.40 over two seeds beats B's single 0.35
        (GENOME_B, 1, 'PRUNED', None),            # not COMPLETE: not part of B's mean
        (None, 0, 'COMPLETE', 0.90, {'baseline': 'none'}),                 # baselines are never candidates
        (GENOME_B, 2, 'COMPLETE', 0.99, {'interrupted': True}),            # nor interrupted runs
    ])
    ranked = read_results('s', run_dir=str(tmp_path / 'runs' / 's')).ranked()
    assert [(r.rank, round(r.value, 6), r.trials) for r in ranked] == [(1, 0.4, (0, 2)), (2, 0.35, (1,))]


def test_export_writes_a_loadable_deterministic_config(tmp_path):
    from search.export import export_study
    _, config = hand_study(tmp_path, [(GENOME_A, 0, 'COMPLETE', 0.3), (GENOME_B, 0, 'COMPLETE', 0.2)],
                           full_training="dict(max_iters=300, val_interval=100, batch_size=4, grad_clip=None, "
                                         "optimizer=dict(type='SGD', lr=0.01), seed=3)")
    out = tmp_path / 'exported' / 'best.py'
    exported = export_study('s', out=str(out), run_dir=str(tmp_path / 'runs' / 's'))
    first = out.read_bytes()
    export_study('s', out=str(out), run_dir=str(tmp_path / 'runs' / 's'))
    assert out.read_bytes() == first                              # byte-identical, no timestamp
    cfg = Config.fromfile(str(out))
    assert cfg.model.type == 'DetectionDistiller' and cfg.model.inherit_neck_head is True
    assert cfg.model.teacher.checkpoint == 'work_dirs/teacher.pth'        # paths as given in the search config
    assert cfg.model.student.config.type == 'RetinaNet'
    assert cfg.model.student.config.backbone.base_channels == 16          # the student's own model, resolved
    loss = cfg.model.distill_losses[0]
    assert loss.name == 'searched' and loss.loss.type == 'SearchedDistillLoss'
    from distill_core import Genome
    assert Genome.parse(loss.loss.genome.to_dict()).key() == Genome.parse(GENOME_A).key()
    assert cfg.custom_imports == dict(imports=['distill_core.modules'], allow_failed_imports=False)
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=300, val_interval=100)
    assert cfg.max_iters == 300 and cfg.train_dataloader.batch_size == 4
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.01) and 'clip_grad' not in cfg.optim_wrapper
    assert cfg.randomness.seed == 3
    # the student's MultiStepLR (600 iterations, milestone 450) stretched to 300 iterations
    assert cfg.param_scheduler[0].end == 300 and cfg.param_scheduler[0].milestones == [225]
    text = first.decode()
    assert 'formula:       global: catt -> scale_r2 -> norm_N | l1 x6' in text
    assert 'proxy AP:      0.3000' in text and 'study:         s' in text and str(config) in text
    assert exported.trials == (0,) and exported.value == pytest.approx(0.3)
    rank2 = export_study('s', out=str(tmp_path / 'rank2.py'), run_dir=str(tmp_path / 'runs' / 's'), rank=2)
    assert rank2.formula.startswith('fg_bg') and 'rank 2 of 2' in open(rank2.path).read()


def test_export_errors_name_the_problem(tmp_path):
    from search.export import check_full_training, export_study
    _, config = hand_study(tmp_path, [(GENOME_A, 0, 'FAIL', None)])
    run_dir = str(tmp_path / 'runs' / 's')
    with pytest.raises(ConfigError, match='no COMPLETE search trial'):
        export_study('s', out=str(tmp_path / 'x.py'), run_dir=run_dir)
    with pytest.raises(ConfigError, match="unknown key full_training.max_iter .*did you mean 'max_iters'"):
        check_full_training({'max_iter': 10}, 'cfg.py')
    with pytest.raises(ConfigError, match='full_training.batch_size must be a positive integer'):
        check_full_training({'batch_size': 0}, 'cfg.py')
    os.rename(config, tmp_path / 'moved.py')
    rc, _, err = run_cli(['export', '--study', 's', '--run-dir', run_dir], cwd=tmp_path)
    assert rc == 2 and 'not at' in err and '--search-config' in err
    rc, _, err = run_cli(['export', '--study', 'nope', '--run-dir', run_dir], cwd=tmp_path)
    assert rc == 2 and "no study 'nope'" in err


def test_full_training_on_an_epoch_based_student_config():
    from search.export import apply_full_training
    cfg = {'train_cfg': {'type': 'EpochBasedTrainLoop', 'max_epochs': 12, 'val_interval': 1},
           'param_scheduler': [{'type': 'LinearLR', 'by_epoch': False, 'begin': 0, 'end': 500},
                               {'type': 'MultiStepLR', 'begin': 0, 'end': 12, 'milestones': [8, 11]}],
           'optim_wrapper': {'type': 'OptimWrapper', 'optimizer': {'type': 'SGD', 'lr': 0.02}}}
    apply_full_training(cfg, {'max_epochs': 24}, 'cfg.py')
    assert cfg['train_cfg'] == {'type': 'EpochBasedTrainLoop', 'max_epochs': 24, 'val_interval': 24}
    # the epoch schedule doubles, the iteration warmup keeps its 500 iterations
    assert cfg['param_scheduler'] == [{'type': 'LinearLR', 'by_epoch': False, 'begin': 0, 'end': 500},
                                      {'type': 'MultiStepLR', 'begin': 0, 'end': 24, 'milestones': [16, 22]}]
    with pytest.raises(ConfigError, match='changes the training loop kind'):
        apply_full_training(dict(cfg), {'max_iters': 1000}, 'cfg.py')


def test_header_masks_the_storage_password():
    from search.export import export_header
    from search.results import RankedGenome, StudyResults
    results = StudyResults(study='s', storage='postgresql://alice:***@db/search', user_attrs={})
    chosen = RankedGenome(rank=1, key='k' * 64, value=0.5, trials=(3,), formula='global: id | l2 x1', genome={},
                          stage=1, input='global')
    header = export_header(results, chosen, 'cfg.py', 'out.py', 1)
    assert 'postgresql://alice:***@db/search' in header and all(line.startswith('#') for line in
                                                               header.splitlines())


# --------------------------------------------------------------------------- slow: the real tiny search
@pytest.mark.slow
def test_launch_exports_and_the_export_trains_transfers_and_loads(tiny_search, tmp_path):
    assert tiny_search['returncode'] == 0, tiny_search['stderr'][-4000:]
    cwd, study = tiny_search['cwd'], tiny_search['study']
    launched = osp.join(cwd, 'runs', study, f'{study}_best.py')
    assert osp.isfile(launched) and launched in tiny_search['stdout'], \
        tiny_search['stdout'][-3000:]                                 # launch exported it and said where
    out = osp.join(str(tmp_path), 'searched.py')
    rc, stdout, err = run_cli(['export', '--study', study, '-o', out, '--json'], cwd=cwd)
    assert rc == 0, err
    assert open(out).read().split('\n', 15)[-1] == open(launched).read().split('\n', 15)[-1]  # same config
    first = open(out, 'rb').read()
    assert run_cli(['export', '--study', study, '-o', out], cwd=cwd)[0] == 0
    assert open(out, 'rb').read() == first
    cfg = Config.fromfile(out)
    assert json.loads(stdout)['rank'] == 1 and cfg.model.distill_losses[0].loss.type == 'SearchedDistillLoss'

    work_dir = osp.join(str(tmp_path), 'train')
    rc, stdout, err = run_cli(['train', out, '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_iters=3',
                               'train_cfg.val_interval=3', 'train_dataloader.batch_size=2'], cwd=cwd, timeout=900)
    assert rc == 0, err[-4000:]
    student_ckpt = osp.join(str(tmp_path), 'student.pth')
    rc, _, err = run_cli(['transfer', osp.join(work_dir, 'final.pth'), student_ckpt], cwd=cwd)
    assert rc == 0, err

    # plain MMDetection: init_detector with the student's own config and the transferred checkpoint ...
    from mmdet.apis import inference_detector, init_detector
    from mmdet.utils import register_all_modules as register_mmdet
    from mmengine.registry import DefaultScope
    from distill_core import register_all_modules
    from distill_core.checkpoint import load_checkpoint_file, state_dict_of
    from distill_core.model_config import build_in_mmdet_scope
    register_mmdet()
    plain = init_detector(STUDENT_CONFIG, student_ckpt, device='cpu')
    # ... predicts what the trained distiller's own student predicts
    register_all_modules()
    distiller = build_in_mmdet_scope(cfg.model)
    missing, unexpected = distiller.load_state_dict(state_dict_of(load_checkpoint_file(
        osp.join(work_dir, 'final.pth'), 'test')), strict=False)
    assert not [k for k in missing if not k.startswith('teacher.')] and not unexpected
    student = distiller.student.eval()
    student.cfg = plain.cfg
    image = osp.join(cwd, 'data', 'shapes', 'val', sorted(os.listdir(osp.join(cwd, 'data', 'shapes', 'val')))[0])
    for model in (plain, student):
        model.bbox_head.test_cfg['score_thr'] = 0.0   # keep every box: an untrained detector scores low
    with torch.no_grad(), DefaultScope.overwrite_default_scope('mmdet'):
        expected = inference_detector(student, image).pred_instances
        got = inference_detector(plain, image).pred_instances
    assert len(got) == len(expected) > 0
    torch.testing.assert_close(got.bboxes, expected.bboxes)
    torch.testing.assert_close(got.scores, expected.scores)
    assert torch.equal(got.labels, expected.labels)
