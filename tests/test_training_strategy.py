"""The training strategy as genes (stage 2): the inheriting gene decides whether the student's neck and heads
start as the teacher's, the distillation weight follows its warm-up and decay (as fractions of the schedule, in
the proxy's own loop and under mmengine's Runner), the export writes the chosen strategy and `train` honours it."""
import glob
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from distill_core.errors import ConfigError
from distill_core.genome import Genome, TrainingStrategy

from .demo_utils import ROOT, build_teacher_checkpoint, demo_batch
from .test_export import hand_study, run_cli

PKD_GLOBAL = {'global': dict(transforms=['no', 'no', 'channel_standardize'], distance='l2', weight=1)}


def search_cfg(tmp_path, inherit=True):
    return dict(teacher=dict(config=f'{ROOT}/configs/demo/retinanet_teacher.py',
                             checkpoint=build_teacher_checkpoint('retinanet', tmp_path)),
                student=dict(config=f'{ROOT}/configs/demo/retinanet_student.py'),
                proxy=dict(train_images=8, val_images=4, iterations=4, batch_size=2, inherit_neck_head=inherit))


def genome(strategy=None):
    return Genome.from_dict({'terms': PKD_GLOBAL, 'strategy': strategy}).to_json()


def neck_and_head(model):
    return {k: v for k, v in model.state_dict().items() if k.startswith(('neck.', 'bbox_head.'))}


@pytest.mark.parametrize('inherit', [True, False])
def test_the_inheriting_gene_decides_the_students_start(tmp_path, inherit):
    """On: every student neck/head tensor the teacher has with the same shape starts equal to it (the FPN's
    lateral convs differ in shape: narrower backbone); off: none does. The genome's gene overrides the proxy's."""
    from workers.prepare import check_search_config
    from workers.proxy import build_distiller
    cfg = search_cfg(tmp_path, inherit=not inherit)
    settings = check_search_config(cfg)
    torch.manual_seed(0)
    model = build_distiller(cfg, genome(dict(inherit_neck_head=inherit)), settings)
    student, teacher = neck_and_head(model.student), neck_and_head(model.teacher)
    shared = [k for k, v in student.items() if k in teacher and teacher[k].shape == v.shape and v.is_floating_point()]
    assert len(shared) > 10 and any(k.startswith('neck.fpn_convs') for k in shared)
    equal = [k for k in shared if torch.equal(student[k], teacher[k])]
    if inherit:
        assert equal == shared
    else:
        # random conv inits differ; constant inits (norm weights 1, biases 0) may agree
        assert not [k for k in equal if student[k].dim() > 1]
    # without a strategy the genome is trained with the proxy's
    assert build_distiller(cfg, genome(), settings).inherit_neck_head is (not inherit)


def test_the_distillation_weight_follows_warmup_and_decay(tmp_path, shapes_root):
    """The factor on every distillation loss is the strategy's at the progress the training loop sets; the
    detection losses are untouched."""
    from mmengine.logging import MessageHub

    from workers.prepare import check_search_config
    from workers.proxy import build_distiller
    cfg = search_cfg(tmp_path)
    settings = check_search_config(cfg)
    strategy = dict(inherit_neck_head=True, warmup=0.2, decay='linear')
    model = build_distiller(cfg, genome(strategy), settings)
    constant = build_distiller(cfg, genome(dict(inherit_neck_head=True)), settings)
    constant.load_state_dict(model.state_dict())
    inputs, samples = demo_batch(model, 'retinanet', shapes_root)
    torch.manual_seed(0)
    with torch.no_grad():
        reference = constant.loss(inputs, samples)
    for progress, factor in ((0.0, 0.0), (0.1, 0.45), (0.2, 0.8), (0.5, 0.5), (1.0, 0.0)):   # warm x (1 - p)
        assert TrainingStrategy(**strategy).distill_weight(progress) == pytest.approx(factor)
        model.set_distill_progress(progress)
        torch.manual_seed(0)
        with torch.no_grad():
            losses = model.loss(inputs, samples)
        assert float(losses['loss_searched_global']) == pytest.approx(factor * float(reference['loss_searched_global']))
        assert torch.equal(losses['loss_cls'][0], reference['loss_cls'][0])
    # under an mmengine Runner the progress comes from its runtime info (RuntimeInfoHook)
    model.set_distill_progress(None)
    hub = MessageHub.get_instance('strategy_test')
    hub.update_info('iter', 30)
    hub.update_info('max_iters', 100)
    assert model.distill_factor() == pytest.approx(0.7)
    hub.update_info('max_iters', None)
    with pytest.raises(ConfigError, match='needs the training progress'):
        model.distill_factor()
    with pytest.raises(ConfigError, match='strategy.warmup must be a fraction'):
        TrainingStrategy(warmup=2)


def test_export_writes_the_strategy_and_train_honours_it(tmp_path, shapes_root):
    """A stage-2 winner's strategy reaches the exported config; `train` (mmengine Runner) warms the
    distillation weight up from 0 over the fraction of ITS schedule; a stage-1 winner gets the proxy's."""
    from search.export import export_study
    strategy = dict(inherit_neck_head=False, warmup=0.5, decay='linear')
    stage2 = {'terms': PKD_GLOBAL, 'strategy': strategy}
    stage1 = {'terms': PKD_GLOBAL}
    os.makedirs(tmp_path / 'data', exist_ok=True)
    os.symlink(shapes_root, tmp_path / 'data' / 'shapes')
    os.makedirs(tmp_path / 'work_dirs', exist_ok=True)
    os.replace(build_teacher_checkpoint('retinanet', tmp_path), tmp_path / 'work_dirs' / 'teacher.pth')
    hand_study(tmp_path, [(stage2, 0, 'COMPLETE', 0.3), (stage1, 0, 'COMPLETE', 0.2)])
    out = str(tmp_path / 'best.py')
    export_study('s', out=out, run_dir=str(tmp_path / 'runs' / 's'))
    cfg = Config.fromfile(out)
    assert cfg.model.inherit_neck_head is False
    assert cfg.model.distill_schedule == dict(warmup=0.5, decay='linear')
    assert 'no inherit, warm-up 0.5, linear decay' in open(out).read()
    second = export_study('s', out=str(tmp_path / 'second.py'), run_dir=str(tmp_path / 'runs' / 's'), rank=2)
    cfg2 = Config.fromfile(second.path)
    assert cfg2.model.inherit_neck_head is True and 'distill_schedule' not in cfg2.model   # the proxy's

    work_dir = str(tmp_path / 'train')
    rc, _, err = run_cli(['train', out, '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_iters=2',
                          'train_cfg.val_interval=2', 'train_dataloader.batch_size=2',
                          'default_hooks.logger.interval=1'], cwd=str(tmp_path), timeout=600)
    assert rc == 0, err[-4000:]
    log = open(glob.glob(osp.join(work_dir, '*', '*.log'))[0]).read()
    values = [float(v) for v in re.findall(r'Iter\(train\) \[\s*\d+/2\].*?loss_searched_global: ([0-9.e+-]+)', log)]
    assert len(values) == 2, log[-3000:]
    assert values[0] == 0.0 and values[1] > 0   # progress 0: factor 0; progress 0.5: factor 0.5 (window mean)


def test_trainable_ops_train_with_the_student(tmp_path, shapes_root):
    """MGD's generators (the space's mgd genome) are built by the distiller at the teacher's channels, one per
    FPN level, and the proxy's optimizer updates them with the student (as the channel adapters)."""
    from search.space import Space
    from workers.prepare import check_search_config
    from workers.proxy import build_distiller, build_optim_wrapper
    cfg = search_cfg(tmp_path)
    settings = check_search_config(dict(cfg, proxy=dict(cfg['proxy'], optimizer=dict(type='SGD', lr=0.1))))
    model = build_distiller(cfg, Space.default().methods['mgd'].to_json(), settings)
    generative = model.distill_losses['searched'].terms['global'].cascade[0]
    assert len(generative.levels) == model.num_levels == 5
    assert generative.levels[0][0].in_channels == model.teacher.neck.out_channels
    wrapper, params = build_optim_wrapper(model, settings)
    generator = list(generative.parameters())
    assert {id(p) for p in generator} <= {id(p) for p in params}
    before = [p.detach().clone() for p in generator]
    inputs, samples = demo_batch(model, 'retinanet', shapes_root)
    model.set_distill_progress(0.0)
    total, _ = model.parse_losses(model.loss(inputs, samples))
    wrapper.update_params(total)
    assert all(not torch.equal(a, p) for a, p in zip(before, generator))
