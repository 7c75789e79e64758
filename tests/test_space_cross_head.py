"""The ``cross_head`` knowledge input: its cross point as a gene (sample, mutate, cross over, canonicalise,
export), the families that cannot offer it (with the reason), and its searched loss on a demo pair."""
import random

import pytest
import torch

import distill_core
from distill_core.errors import ConfigError
from distill_core.genome import Genome, OpSpec, Term
from search.operators import Stage1Ops, build_ops
from search.space import Space

from .demo_utils import build_teacher_checkpoint, demo_batch, demo_config_path

distill_core.register_all_modules()
torch.set_num_threads(2)


def cross_term(index='auto', weight=1.0, distance='quality_focal'):
    return Term('cross_head', True, (OpSpec('no'),), OpSpec(distance), weight, {'cross_index': index})


def test_genome_round_trip_canonical_form_and_formula():
    genome = Genome((cross_term(1),))
    assert Genome.from_json(genome.to_json()) == genome
    assert genome.to_dict()['terms'][0]['params'] == {'cross_index': 1}
    # the default is part of the canonical form: an unset cross point is the published rule
    unset = Genome((Term('cross_head', True, (OpSpec('no'),), OpSpec('quality_focal'), 1.0),))
    assert unset.key() == Genome((cross_term('auto'),)).key() != genome.key()
    assert Genome((cross_term(1.0),)).key() == genome.key()            # numbers canonicalised
    assert genome.formula() == 'cross_head(cross_index=1): no | quality_focal x1'
    assert unset.formula() == 'cross_head: no | quality_focal x1'
    # the other inputs' dicts (and so their keys in existing studies) carry no params
    assert 'params' not in Term('logits', True, (OpSpec('no'),), OpSpec('l1'), 1.0).to_dict()
    with pytest.raises(ConfigError, match='cross_index must be "auto" or an integer'):
        cross_term(-1)
    with pytest.raises(ConfigError, match="unknown input parameter 'depth'"):
        Term('cross_head', params={'depth': 1})
    with pytest.raises(ConfigError, match="unknown input parameter 'cross_index'"):
        Term('logits', params={'cross_index': 1})


def test_space_samples_mutates_and_crosses_over_the_cross_point():
    space = Space.default()
    assert 'cross_head' in space.inputs
    options = space.input_param_options('cross_head')['cross_index']
    assert options[0] == 'auto'
    rng = random.Random(0)
    sampled = [space.sample_term('cross_head', rng, family='gfl') for _ in range(40)]
    assert {t.input_params['cross_index'] for t in sampled} == set(options)
    assert all(space.term_problem(t, 'gfl') is None for t in sampled)
    ops = Stage1Ops(space, 'cross_head', family='retinanet')
    assert ('input_param', 'cross_index') in ops._genes(sampled[0])
    parent = ops.sample(rng)
    children = [ops.mutate(parent, rng) for _ in range(60)]
    assert all(ops.problem(c) is None for c in children)
    assert any(c.terms[0].input_params != parent.terms[0].input_params for c in children)
    a, b = Genome((cross_term(0),)), Genome((cross_term(2),))
    crossed = {ops.crossover(a, b, rng).terms[0].input_params['cross_index'] for _ in range(40)}
    assert crossed == {0, 2}
    # seeded with CrossKD's published classification formulation
    seeds = ops.seeds()
    assert Genome((cross_term('auto'),)).key() in {s.key() for s in seeds}
    # the gene is an Optuna parameter of the trial (parameter importances)
    from search.study import genome_params
    assert genome_params(space, Genome((cross_term(2),)))['cross_head.cross_index'][0] == 2


@pytest.mark.parametrize('family', ['faster_rcnn', 'reppoints'])
def test_families_without_head_towers_do_not_offer_it(family):
    space = Space.default()
    assert 'cross_head' not in space.offered_inputs(family)
    assert 'cross_head' in space.offered_inputs('gfl') and 'cross_head' in space.offered_inputs(None)
    stage1, _ = build_ops(space, None, family)
    assert 'cross_head' not in stage1
    reason = 'no layered dense head' if family == 'faster_rcnn' else 'deformable convs'
    with pytest.raises(ConfigError, match=reason):
        Stage1Ops(space, 'cross_head', family=family)
    with pytest.raises(ConfigError, match=reason):
        space.validate(Genome((cross_term(),)), family)
    assert 'cross_head' not in {t.input for t in space.sample_genome(random.Random(1), family=family).terms}


def test_bad_input_param_options_in_a_space_file():
    from search.space import DEFAULT_SPACE_FILE, read_yaml
    raw = read_yaml(DEFAULT_SPACE_FILE)
    raw['input_params'] = {'cross_head': {'cross_index': ['auto', 'last']}}
    with pytest.raises(ConfigError, match="input_params.cross_head.cross_index: option 'last'"):
        Space.from_dict(raw, 'mine.yaml')
    raw['input_params'] = {'logits': {'cross_index': [1]}}
    with pytest.raises(ConfigError, match="input_params.logits.cross_index: 'logits' has no such parameter"):
        Space.from_dict(raw, 'mine.yaml')


def test_export_keeps_the_cross_point(tmp_path):
    from mmengine.config import Config
    from search.export import build_export_config, render_config
    genome = Genome((cross_term(2, weight=2.0),))
    raw = dict(teacher=dict(config=demo_config_path('gfl_teacher'), checkpoint='t.pth'),
               student=dict(config=demo_config_path('gfl_student')), proxy={})
    path = tmp_path / 'exported.py'
    path.write_text(render_config(build_export_config(raw, genome.to_dict(), 'src'), '# exported'))
    loss = Config.fromfile(str(path)).model.distill_losses[0]['loss']
    assert Genome.parse(loss['genome'].to_dict()) == genome


def test_searched_cross_head_term_on_the_demo_gfl_pair(tmp_path, shapes_root):
    from distill_core.cross_head import crossed_outputs
    from distill_core.distances import QualityFocalDistance
    from distill_core.distiller import DetectionDistiller
    from distill_core.families import FAMILIES
    genome = Genome((cross_term(2),))
    model = DetectionDistiller(
        teacher=dict(config=demo_config_path('gfl_teacher'), checkpoint=build_teacher_checkpoint('gfl', tmp_path)),
        student=dict(config=demo_config_path('gfl_student')),
        distill_losses=[dict(name='searched', loss=dict(type='SearchedDistillLoss', genome=genome.to_json()))])
    model.init_weights()
    model.train()
    captured = []
    model.distill_losses['searched'].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    inputs, samples = demo_batch(model, 'gfl', shapes_root)
    losses = model.loss(inputs, samples)
    ctx = captured[0]
    assert len(ctx.recorded['cross_head.reg_convs.2']) == 5      # the last tower module, per level
    crossed, teacher = crossed_outputs(ctx, FAMILIES['gfl'], 2)
    distance = QualityFocalDistance(beta=1.0)
    expected = sum(distance(r.sigmoid(), t.sigmoid()) for r, t in zip(crossed[0], teacher[0]))
    torch.testing.assert_close(losses['loss_searched_cross_head'], expected, rtol=1e-4, atol=1e-7)
    losses['loss_searched_cross_head'].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.student.backbone.conv1.weight.grad.abs().sum() > 0


def test_searched_cross_head_refuses_a_two_stage_student(tmp_path):
    from distill_core.distiller import DetectionDistiller
    with pytest.raises(ConfigError, match="'cross_head' is not defined for faster_rcnn: a two-stage detector"):
        DetectionDistiller(
            teacher=dict(config=demo_config_path('faster_rcnn_teacher'),
                         checkpoint=build_teacher_checkpoint('faster_rcnn', tmp_path)),
            student=dict(config=demo_config_path('faster_rcnn_student')),
            distill_losses=[dict(name='searched', loss=dict(type='SearchedDistillLoss',
                                                            genome=Genome((cross_term(),)).to_json()))])
