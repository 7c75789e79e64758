"""SearchedDistillLoss on every demo detector family: one real distiller step per family (module fixture),
every term logged and reaching the student, random genomes of the default space (hypothesis), box decoding
consistent across train/eval head modes, and the knowledge inputs' details."""
import dataclasses
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmcv.ops import roi_align as mmcv_roi_align
from mmdet.registry import MODELS
from mmengine.structures import InstanceData

from distill_core import ConfigError, Genome, SearchedDistillLoss
from distill_core.distiller import DetectionDistiller
from distill_core.genome import OpSpec, Term
from distill_core.families import FAMILIES, family_of
from distill_core.knowledge import INPUTS, LocalizationResponse, fpn_levels
from distill_core.roi_align import vectorised_pays
from search.space import Space

from .demo_utils import DEMO_FAMILIES, build_teacher_checkpoint, demo_batch, demo_config_path

torch.set_num_threads(2)


def term(input, ops, distance='l1', weight=1.0):
    return Term(input, True, tuple(OpSpec.parse(o) for o in ops), OpSpec.parse(distance), weight)


ALL_INPUTS = Genome((
    term('global', ['catt', 'scale_r2', 'norm_N'], 'l1', 6),
    term('fg_bg', ['mask', 'no', 'norm_C'], 'l1', 2),
    term('instance', ['catt', 'scale_r1', 'norm_C'], 'pearson', 1),
    term('logits', ['softmax_C'], 'pearson', 0.1),
    term('localization', [], 'giou', 1),
))
TERM_KEYS = {'global': ['loss_global'], 'fg_bg': ['loss_fg', 'loss_bg'], 'instance': ['loss_instance'],
             'logits': ['loss_logits'], 'localization': ['loss_loc'], 'cross_head': ['loss_cross_head']}


@pytest.fixture(scope='module')
def steps(tmp_path_factory, shapes_root):
    """Per family: the distiller, the DistillContext of one real training step, and its losses."""
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)   # what the Runner does from default_scope='mmdet'
    tmp = tmp_path_factory.mktemp('searched')
    out = {}
    for family in DEMO_FAMILIES:
        torch.manual_seed(0)
        model = DetectionDistiller(
            teacher=dict(config=demo_config_path(f'{family}_teacher'),
                         checkpoint=build_teacher_checkpoint(family, tmp)),
            student=dict(config=demo_config_path(f'{family}_student')),
            distill_losses=[dict(name='searched', loss=dict(type='SearchedDistillLoss', genome=ALL_INPUTS.to_json()))])
        model.init_weights()
        model.train()
        captured = []
        model.distill_losses['searched'].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        inputs, samples = demo_batch(model, family, shapes_root)
        losses = model.loss(inputs, samples)
        out[family] = (model, captured[0], losses)
    return out


@pytest.mark.parametrize('family', DEMO_FAMILIES)
def test_every_term_logged_and_reaches_the_student(steps, family):
    model, ctx, losses = steps[family]
    keys = [f'loss_searched_{k[5:]}' for t in ALL_INPUTS.terms for k in TERM_KEYS[t.input]]
    assert all(k in losses for k in keys), sorted(losses)
    # the student's neck features and dense-head outputs of this step (response terms act on the latter)
    head_outputs = [t for level in ctx.student_head_outputs for t in level if t.requires_grad]
    student_tensors = list(ctx.raw_student_feats) + head_outputs
    for key in keys:
        value = losses[key]
        assert value.dim() == 0 and torch.isfinite(value) and value.item() > 0, key
        grads = torch.autograd.grad(value, student_tensors, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f'{key} gives the student no gradient'
        if key.endswith(('logits', 'loc')):
            assert any(g is not None and g.abs().sum() > 0 for g in grads[len(ctx.raw_student_feats):]), key
    assert all(not t.requires_grad for t in ctx.teacher_feats)
    assert all(not p.requires_grad for p in model.teacher.parameters())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(DEMO_FAMILIES), seed=st.integers(0, 2 ** 31 - 1))
def test_random_genomes_of_default_space_give_finite_losses(steps, family, seed):
    space = Space.default()
    genome = space.sample_genome(random.Random(seed), family=family)
    loss = SearchedDistillLoss(genome.to_json())
    ctx = steps[family][1]
    loss.bind_features(ctx.teacher_feats[0].shape[1], len(ctx.teacher_feats))   # as DetectionDistiller does
    with torch.no_grad():
        out = loss(ctx)
    expected = {k for t in genome.active_terms for k in TERM_KEYS[t.input]}
    assert set(out) == expected, genome.formula()
    for key, value in out.items():
        assert value.dim() == 0 and torch.isfinite(value), f'{family} {genome.formula()} {key}={value}'
    assert Genome.from_json(genome.to_json()).key() == genome.key()


def test_config_build_and_published_genomes(steps):
    _model, ctx, _ = steps['faster_rcnn']
    published = Space.default().published['faster_rcnn_r101_r50']
    loss = MODELS.build(dict(type='SearchedDistillLoss', genome=published.to_dict()))
    assert loss.genome == published
    out = loss(ctx)
    assert set(out) == {'loss_global', 'loss_fg', 'loss_bg', 'loss_instance', 'loss_logits'}
    with pytest.raises(ConfigError, match='unknown input'):
        SearchedDistillLoss(published, input_options={'boxes': {}})
    with pytest.raises(ConfigError, match='unknown option'):
        SearchedDistillLoss(published, input_options={'instance': {'size': 3}})


def test_localization_kl_only_on_distribution_heads(steps):
    genome = Genome((term('localization', [], {'name': 'kl', 'params': {'temperature': 2.0}}),))
    out = SearchedDistillLoss(genome)(steps['gfl'][1])
    assert torch.isfinite(out['loss_loc']) and out['loss_loc'] > 0
    with pytest.raises(ConfigError, match='box distributions'):
        SearchedDistillLoss(genome)(steps['retinanet'][1])


def test_two_stage_logits_include_roi_classification(steps):
    model, ctx, _ = steps['faster_rcnn']
    family = family_of(model.student)
    assert family.name == 'faster_rcnn'
    student_cls, teacher_cls = family.roi_logits(ctx)
    num_classes = model.student.roi_head.bbox_head.num_classes
    assert student_cls.shape == teacher_cls.shape and student_cls.shape[1] == num_classes + 1
    assert student_cls.requires_grad and not teacher_cls.requires_grad
    pairs = INPUTS['logits'](max_rois_per_image=None).parts(ctx, family, 'l1')[0].pairs
    assert len(pairs) == ctx.num_levels + 1
    assert torch.allclose(pairs[-1][0].sum(1), torch.ones(len(student_cls)))   # softmax over C + 1
    # bounded RoI count: the first K RoIs of every image (the sampler's positives come first)
    rois = ctx.recorded_call(family._EXTRACTOR)[0][1]
    per_image = torch.bincount(rois[:, 0].long())
    capped_student, capped_teacher = family.roi_logits(ctx, max_per_image=5)
    assert len(capped_student) == len(capped_teacher) == int(per_image.clamp(max=5).sum())
    first = torch.cat([torch.arange(start, start + min(int(n), 5))
                       for start, n in zip((torch.cumsum(per_image, 0) - per_image).tolist(), per_image)])
    assert torch.equal(capped_student, student_cls[first])
    # the teacher's RoI head runs on fewer RoIs: same values up to the matmul's summation order
    assert torch.allclose(capped_teacher, teacher_cls[first], rtol=1e-4, atol=1e-5)
    default_cap = INPUTS['logits'].defaults['max_rois_per_image']
    assert len(INPUTS['logits']().parts(ctx, family, 'l1')[0].pairs[-1][0]) == int(per_image.clamp(max=default_cap).sum())


@pytest.mark.parametrize('family', ['fcos', 'reppoints', 'gfl', 'retinanet'])
def test_decoded_boxes_same_in_train_and_eval_forward(steps, family):
    """FCOS multiplies by the stride only in eval; RepPoints returns points in train, boxes in eval. Outputs
    are decoded in the mode they were produced in, as in a training step (student train, teacher eval)."""
    model, ctx, _ = steps[family]
    fam = FAMILIES[family]
    head = model.teacher.bbox_head
    decoded = []
    try:
        for training in (True, False):
            head.train(training)
            with torch.no_grad():
                decoded.append(fam.dense_boxes(head, head(list(ctx.teacher_feats))))
    finally:
        head.train(False)
    a, b = decoded
    assert torch.allclose(a.boxes, b.boxes, atol=1e-4)
    assert torch.allclose(a.scores, b.scores)
    assert a.boxes.shape[:2] == a.scores.shape and a.strides.shape[0] == a.boxes.shape[1]


def test_anchor_and_distribution_decoding_hand_checked(steps):
    model, ctx, _ = steps['retinanet']
    head = model.student.bbox_head
    feats = ctx.teacher_feats
    sizes = [f.shape[-2:] for f in feats]
    cls = [torch.zeros(2, head.num_base_priors * head.cls_out_channels, *s) for s in sizes]
    reg = [torch.zeros(2, head.num_base_priors * 4, *s) for s in sizes]
    dense = FAMILIES['retinanet'].dense_boxes(head, (cls, reg))
    anchors = torch.cat(head.prior_generator.grid_priors(sizes, device='cpu'))
    assert torch.allclose(dense.boxes[1], anchors, atol=1e-4), 'zero deltas decode to the anchors'
    assert torch.allclose(dense.scores, torch.full_like(dense.scores, 0.5))

    model, ctx, _ = steps['gfl']
    head = model.student.bbox_head
    bins = head.reg_max + 1
    reg = [torch.zeros(1, 4 * bins, *f.shape[-2:]) for f in ctx.teacher_feats]
    cls = [torch.zeros(1, head.cls_out_channels, *f.shape[-2:]) for f in ctx.teacher_feats]
    dense = FAMILIES['gfl'].dense_boxes(head, (cls, reg))
    # uniform distributions: every side at the mean bin reg_max / 2, in units of the stride
    widths = dense.boxes[0, :, 2] - dense.boxes[0, :, 0]
    assert torch.allclose(widths, head.reg_max * dense.strides, atol=1e-3)
    assert dense.distributions.shape == (1, dense.boxes.shape[1], 4, bins)


def test_confident_positions_threshold_and_topk():
    loc = LocalizationResponse(score_thr=0.5, min_positions=2)
    scores = torch.tensor([[0.9, 0.1, 0.6], [0.2, 0.3, 0.1]])
    assert loc.confident_positions(scores).tolist() == [[True, False, True], [False, False, False]]
    loc = LocalizationResponse(score_thr=0.95, min_positions=2)
    assert loc.confident_positions(scores).tolist() == [[True, False, True], [False, False, False]]
    loc = LocalizationResponse(score_thr=0.95, min_positions=3)
    assert loc.confident_positions(scores).tolist() == [[True, False, True], [False, True, False]]


def test_fpn_level_rule():
    boxes = torch.tensor([[0, 0, 50, 50], [0, 0, 112, 112], [0, 0, 230, 230], [0, 0, 2000, 2000.0]])
    assert fpn_levels(boxes, [4.0, 8.0, 16.0, 32.0, 64.0], 5).tolist() == [0, 1, 2, 4]


def test_instance_rois_on_constant_maps(steps):
    _model, ctx, _ = steps['retinanet']
    constant = tuple(torch.full_like(f, float(i + 1)) for i, f in enumerate(ctx.teacher_feats))
    const_ctx = dataclasses.replace(ctx, student_feats=constant, teacher_feats=constant, cache={})
    (part,) = INPUTS['instance'](roi_size=5).parts(const_ctx, FAMILIES['retinanet'], 'l1')
    s, t = part.pairs[0]
    boxes = torch.cat(ctx.gt_bboxes)
    assert s.shape == (len(boxes), constant[0].shape[1], 5, 5)
    strides = [4.0, 8.0, 16.0, 32.0, 64.0]
    levels = fpn_levels(boxes, strides, 5)
    # per level chunks in level order, each RoI reads its level's constant value (level index + 1)
    expected = torch.cat([torch.full((int((levels == lv).sum()),), float(lv + 1)) for lv in levels.unique()])
    assert torch.allclose(s.mean(dim=(1, 2, 3)), expected, atol=1e-5)


def test_instance_rois_equal_mmcv_roi_align_with_many_boxes(steps):
    """Enough boxes per level for the vectorised CPU RoIAlign (distill_core/roi_align.py): the pairs are mmcv's
    roi_align of each side, the student's carries the gradient, the teacher's none."""
    _model, ctx, _ = steps['retinanet']
    generator = torch.Generator().manual_seed(0)
    crowded = []
    for sample in ctx.data_samples:
        sample = sample.clone()
        height, width = sample.metainfo['img_shape'][:2]
        corner = torch.rand(40, 2, generator=generator) * torch.tensor([width * 0.8, height * 0.8])
        size = 4 + torch.rand(40, 2, generator=generator) * 60
        sample.gt_instances = InstanceData(bboxes=torch.cat([corner, corner + size], 1),
                                           labels=torch.zeros(40, dtype=torch.long))
        crowded.append(sample)
    student = tuple(f.detach().clone().requires_grad_() for f in ctx.student_feats)
    crowded_ctx = dataclasses.replace(ctx, data_samples=crowded, student_feats=student, cache={})
    (part,) = INPUTS['instance']().parts(crowded_ctx, FAMILIES['retinanet'], 'l1')
    s, t = part.pairs[0]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1)
                      for i, b in enumerate(crowded_ctx.gt_bboxes)])
    strides = [4.0, 8.0, 16.0, 32.0, 64.0][:len(student)]
    levels = fpn_levels(rois[:, 1:], strides, len(student))
    assert any(vectorised_pays(int((levels == lv).sum()), student[lv].shape) for lv in levels.unique().tolist())
    expected_s, expected_t = [], []
    for lv in levels.unique().tolist():
        args = (rois[levels == lv], (7, 7), 1.0 / strides[lv], 2, 'avg', True)
        expected_s.append(mmcv_roi_align(student[lv].detach(), *args))
        expected_t.append(mmcv_roi_align(ctx.teacher_feats[lv], *args))
    assert torch.allclose(s, torch.cat(expected_s), atol=1e-5) and torch.allclose(t, torch.cat(expected_t), atol=1e-5)
    assert s.requires_grad and not t.requires_grad
    s.sum().backward()
    assert student[0].grad is not None and student[0].grad.abs().sum() > 0


def test_no_ground_truth_gives_zero_terms_with_graph(steps):
    _model, ctx, _ = steps['fcos']
    empty = []
    for sample in ctx.data_samples:
        sample = sample.clone()
        sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
        empty.append(sample)
    empty_ctx = dataclasses.replace(ctx, data_samples=empty, cache={})
    out = SearchedDistillLoss(ALL_INPUTS)(empty_ctx)
    assert out['loss_instance'].item() == 0 and out['loss_instance'].requires_grad
    assert out['loss_fg'].item() == 0 and out['loss_bg'].item() > 0


def test_loss_rejects_pairings_wrong_in_any_space():
    with pytest.raises(ConfigError, match='not defined for feature'):
        SearchedDistillLoss(Genome((term('global', ['no'], 'iou'),)))
    with pytest.raises(ConfigError, match='ill-posed'):
        SearchedDistillLoss(Genome((term('global', ['logsoftmax_C'], 'kl'),)))
    with pytest.raises(ConfigError, match='takes no transforms'):
        SearchedDistillLoss(Genome((term('localization', ['norm_C'], 'giou'),)))
    with pytest.raises(ConfigError, match='cannot build'):
        SearchedDistillLoss(Genome((term('fg_bg', [{'name': 'mask', 'params': {'ratio': 2.0}}], 'l1'),)))
