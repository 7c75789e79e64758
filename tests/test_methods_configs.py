"""The method configs: COCO pairs carry the published hyperparameters, demo configs build, and the shipped
DetKDS distillers are valid genomes of the search space, equal to the space's published seeds."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

import distill_core
from distill_core.genome import Genome
from search.space import Space

from .demo_utils import ROOT

distill_core.register_all_modules()   # the losses, hooks and ops the configs name

DISTILLERS = osp.join(ROOT, 'configs', 'distillers')


def _losses(path):
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'DetectionDistiller'
    return cfg, {entry['name']: entry for entry in cfg.model.distill_losses}


@pytest.mark.parametrize('name, expected', [
    ('fgd/fgd_retinanet_r101_r50_2x_coco', dict(temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4,
                                                lambda_fgd=5e-6)),
    ('fgd/fgd_faster_rcnn_r101_r50_2x_coco', dict(alpha_fgd=5e-5, beta_fgd=2.5e-5, gamma_fgd=5e-5,
                                                  lambda_fgd=5e-7)),
    ('fgd/fgd_fcos_r101_r50_2x_coco', dict(temp=0.8, alpha_fgd=1.6e-3, beta_fgd=8e-4)),
    ('fgd/fgd_reppoints_x101_r50_2x_coco', dict(alpha_fgd=1.6e-3, lambda_fgd=8e-6)),
    ('mgd/mgd_retinanet_x101_r50_2x_coco', dict(alpha_mgd=2e-5, lambda_mgd=0.65)),
    ('pkd/pkd_faster_rcnn_r101_r50_2x_coco', dict(loss_weight=6)),
    ('pkd/pkd_retinanet_x101_r50_2x_coco', dict(loss_weight=10)),
    ('gkd/gkd_gfl_r101_r50_1x_coco', dict(beta_gkd=0.5, alpha_gkd=1e-3)),
    ('crosskd/crosskd_gfl_r101_r50_1x_coco', dict(cross_index=3, reg_loss='kl', cls_weight=1.0, reg_weight=4.0)),
    ('crosskd/crosskd_retinanet_r101_r50_2x_coco', dict(cross_index=3, reg_loss='giou', cls_weight=1.0,
                                                        reg_weight=1.0)),
    ('crosskd/crosskd_fcos_r101_r50_2x_coco', dict(cross_index=2, reg_loss='iou', cls_weight=0.4, reg_weight=0.75)),
    ('bckd/bckd_gfl_r101_r50_1x_coco', dict(cls_weight=1.0, loc_weight=4.0, beta=1.0)),
])
def test_coco_configs_carry_published_values(name, expected):
    cfg, losses = _losses(osp.join(DISTILLERS, f'{name}.py'))
    loss = next(iter(losses.values()))['loss']
    for key, value in expected.items():
        assert loss[key] == pytest.approx(value), key
    assert cfg.find_unused_parameters


def test_every_distiller_config_parses_with_registered_losses():
    from mmdet.registry import HOOKS, MODELS
    paths = glob.glob(osp.join(DISTILLERS, '*', '*.py'))
    assert len(paths) >= 30
    for path in paths:
        if osp.basename(path).startswith('faster_rcnn_r50_trained'):
            continue   # a student model config, not a distiller
        cfg, losses = _losses(path)
        for entry in losses.values():
            assert MODELS.get(entry['loss']['type']) is not None, path
        for hook in cfg.get('custom_hooks', []):
            assert HOOKS.get(hook['type']) is not None, path


def test_shipped_detkds_genomes_are_the_space_seeds():
    space = Space.default()
    for path in glob.glob(osp.join(DISTILLERS, 'detkds', '*.json')):
        pair = osp.basename(path)[:-5]
        with open(path) as f:
            genome = Genome.from_json(f.read())
        family = pair.rsplit('_', 2)[0]
        space.validate(genome, family=family)
        assert genome.equivalent(space.published[pair]), pair
        demo = Config.fromfile(osp.join(DISTILLERS, 'detkds', f'detkds_demo_{pair}.py'))
        inline = Genome.parse(demo.model.distill_losses[0]['loss']['genome'].to_dict())
        assert inline.equivalent(genome), pair


RUNNABLE_CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                          if '_base_' not in p.split(osp.sep) and osp.sep + 'search' + osp.sep not in p)


@pytest.mark.parametrize('path', RUNNABLE_CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_every_training_config_renders_for_the_runner(path):
    """mmengine's Runner logs ``cfg.pretty_text`` before training: a config it cannot render (e.g. a dict key
    that is a Python keyword, such as the knowledge input ``global``) never trains."""
    from workers.full_training import prepare_config
    compile(prepare_config(path, work_dir='/tmp/unused').pretty_text, path, 'exec')


def test_hand_written_genome_mappings_are_rewritten_to_the_list_form(tmp_path):
    from workers.full_training import prepare_config
    path = tmp_path / 'mine.py'
    path.write_text(
        f"_base_ = ['{ROOT}/configs/demo/_base_/distill_retinanet.py']\n"
        "model = dict(distill_losses=[dict(name='searched', loss=dict(type='SearchedDistillLoss', genome=dict(\n"
        "    terms={'global': dict(transforms=['catt', 'scale_r2', 'norm_N'], distance='l1', weight=6)})))])\n")
    with pytest.raises(SyntaxError):   # what the Runner would hit without the rewrite
        Config.fromfile(str(path)).pretty_text
    cfg = prepare_config(str(path), work_dir=str(tmp_path))
    genome = cfg.model.distill_losses[0]['loss']['genome']
    assert Genome.parse(genome) == Genome.parse({'terms': {'global': dict(transforms=['catt', 'scale_r2', 'norm_N'],
                                                                          distance='l1', weight=6)}})
    compile(cfg.pretty_text, str(path), 'exec')
