"""Every search config in configs/search (a new file is covered by the glob): it loads and validates, its stage-1
inputs are ones the space offers its (teacher, student) families, a genome of them is valid in the space, its
baselines resolve to existing distiller configs and its `full_training` is accepted. A COCO config names existing
model and method configs under configs/coco and configs/distillers, model-zoo checkpoints under checkpoints/ (they
need not be present) and the COCO data; a demo config trains its teacher into work_dirs/demo and runs a
2-iteration proxy of a genome of all its stage-1 inputs."""
import glob
import math
import os.path as osp
import random

import pytest

from distill_core.model_config import load_config, resolve_model_config
from search.baselines import baseline_specs
from search.config import load_search_config
from search.evolution import StagePlan
from search.export import check_full_training
from search.operators import build_ops
from search.space import Space

from .demo_utils import ROOT, tiny_proxy

CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'search', '*.py')))
DEMO = [p for p in CONFIGS if osp.basename(p).startswith('demo_')]
COCO = [p for p in CONFIGS if osp.basename(p).startswith('coco_')]
# the loss terms an input reports (distill_core/knowledge.py Part keys), where they are not the input's name
PART_KEYS = {'fg_bg': ('fg', 'bg'), 'localization': ('loc',)}


def _stage1(cfg):
    return StagePlan.from_config(cfg.raw['search'], cfg.source).stage1_inputs


def test_the_glob_sees_the_shipped_configs():
    names = {osp.basename(p) for p in CONFIGS}
    assert {'demo_retinanet.py', 'demo_faster_rcnn.py', 'demo_fcos.py', 'demo_gfl.py', 'demo_reppoints.py',
            'demo_mask_rcnn.py', 'demo_cascade_faster_rcnn.py', 'coco_retinanet_r101_r50.py',
            'coco_cascade_mask_rcnn_x101_faster_rcnn_r50.py'} <= names
    assert len(COCO) >= 7


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_search_config_loads_validates_and_resolves_its_space_and_baselines(path, monkeypatch):
    monkeypatch.chdir(ROOT)   # paths inside the configs are relative to the folder `launch` runs in
    cfg = load_search_config(path, ROOT)
    families = cfg.families()
    assert None not in families, f'a detector type the space does not know: {families}'
    space = Space.from_file(cfg.space_path)
    stage1 = _stage1(cfg)
    offered = space.offered_inputs(families)
    assert stage1 and set(stage1) <= set(offered), (stage1, space.dropped_inputs(families))
    ops, _ = build_ops(space, stage1, families)
    rng = random.Random(0)
    for name in stage1:
        space.validate(ops[name].sample(rng), families)
    specs = baseline_specs(cfg.raw, path)
    assert specs.get('none', 'missing') is None, 'the student alone is the first bar'
    for name, method in specs.items():
        if method is not None:   # a published method's losses, set for a student with this student's FPN (its
            student = load_config(method).model.student.config   # channels and levels are what the losses take)
            if osp.basename(student) != osp.basename(cfg.raw['student']['config']):
                necks = [resolve_model_config(config, 'student')['neck']
                         for config in (student, osp.join(ROOT, cfg.raw['student']['config']))]
                assert [(n['out_channels'], n['num_outs']) for n in necks] == \
                    [(necks[1]['out_channels'], necks[1]['num_outs'])] * 2, (name, student)
    check_full_training(cfg.raw.get('full_training'), path)


@pytest.mark.parametrize('path', COCO, ids=osp.basename)
def test_coco_config_names_existing_configs_and_local_checkpoints(path):
    cfg = load_search_config(path, ROOT)
    raw = cfg.raw
    for role in ('teacher', 'student'):
        config = raw[role]['config']
        assert config.startswith('configs/coco/') and osp.isfile(osp.join(ROOT, config)), config
    assert raw['teacher']['checkpoint'].startswith('checkpoints/')   # model-zoo weights by local path
    assert 'train_if_missing' not in raw['teacher'] and 'generate_shapes' not in raw.get('data', {})
    assert raw['data']['data_root'] == 'data/coco'
    assert isinstance(raw['baselines'], dict), 'a COCO pair names its method configs explicitly'
    for name, method in raw['baselines'].items():
        assert method is None if name == 'none' else (method.startswith('configs/distillers/')
                                                      and method.endswith('_coco.py')), (name, method)
    assert cfg.resources['gpus_per_trial'] == 1
    full = raw['full_training']
    assert 'max_epochs' in full and full['param_scheduler'], 'the published epoch schedule'
    plan = StagePlan.from_config(raw['search'], path)
    per_input = plan.population_size + (plan.generations - 1) * (plan.population_size - plan.elite_count)
    assert per_input >= 20, 'the DetKDS release ran 20-30 trials per input'


@pytest.mark.parametrize('path', DEMO, ids=osp.basename)
def test_demo_config_runs_a_two_iteration_proxy(path, demo_teacher_checkpoint, shapes_root):
    from workers.proxy import run_proxy_trial
    cfg = load_search_config(path, ROOT)
    teacher = cfg.raw['teacher']
    assert teacher['config'].startswith('configs/demo/')
    work_dir = 'work_dirs/demo/' + osp.splitext(osp.basename(teacher['config']))[0]
    assert teacher['train_if_missing']['work_dir'] == osp.dirname(teacher['checkpoint']) == work_dir
    stage1 = _stage1(cfg)
    genome = Space.from_file(cfg.space_path).sample_genome(random.Random(0), stage1, stage=1, family=cfg.families())
    raw = tiny_proxy(cfg.raw, shapes_root, demo_teacher_checkpoint(teacher['config']))
    reports = []
    result = run_proxy_trial(raw, genome.to_json(), seed=0, report=reports.append, base_dir=ROOT)
    assert result.iterations == 2 and [r['iteration'] for r in reports] == [1, 2]
    for name in stage1:   # every stage-1 input trains in this pair
        for part in PART_KEYS.get(name, (name,)):
            assert all(math.isfinite(r[f'loss_searched_{part}']) for r in reports), (name, reports[0])
    assert 0.0 <= result.metrics['AP'] <= 1.0 or math.isnan(result.metrics['AP'])
