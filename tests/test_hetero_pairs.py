"""Heterogeneous teacher/student pairs and the Cascade R-CNN teacher: FPN levels paired by stride (P2-P6 vs P3-P7)
or by index with the student resized (PKD), every knowledge input a pair serves trained for a few steps into the
student only, the inputs a pair cannot serve dropped with their reason (and refused when forced), the cascade's
RoI class scores against a hand-run of its stages, and the heterogeneous demo search configs' level pairing (their
2-iteration proxies: tests/test_search_configs.py)."""
import logging
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger

from distill_core import ConfigError, Genome
from distill_core.distiller import DetectionDistiller
from distill_core.families import FAMILIES, family_of
from distill_core.knowledge import INPUTS
from distill_core.levels import pair_levels
from search.config import load_search_config
from search.operators import build_ops
from search.space import Space

from .demo_utils import ROOT, demo_batch, demo_config_path
from .test_space_searched_loss import TERM_KEYS, term

torch.set_num_threads(1)

# one formulation per knowledge input (the cascade's ops and distances are the search's concern, not these tests')
TERMS = {'global': term('global', ['catt', 'scale_r2', 'norm_N'], 'l1', 1),
         'fg_bg': term('fg_bg', ['mask', 'no', 'norm_C'], 'l1', 1),
         'instance': term('instance', ['catt', 'scale_r1', 'norm_C'], 'pearson', 1),
         'logits': term('logits', ['softmax_C'], 'pearson', 1),
         'localization': term('localization', [], 'giou', 1)}


@pytest.fixture(autouse=True, scope='module')
def mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)


@pytest.fixture(scope='module')
def p3_p7_student(tmp_path_factory):
    """The demo RetinaNet student with COCO's level layout: FPN from stride 8, P3-P7 (strides 8-128)."""
    path = tmp_path_factory.mktemp('p3p7') / 'retinanet_student_p3_p7.py'
    path.write_text(f"_base_ = [{demo_config_path('retinanet_student')!r}]\n"
                    "model = dict(neck=dict(start_level=1),\n"
                    "             bbox_head=dict(anchor_generator=dict(strides=[8, 16, 32, 64, 128])))\n")
    return str(path)


@pytest.fixture(scope='module')
def checkpoints(demo_teacher_checkpoint):
    return {name: demo_teacher_checkpoint(name) for name in ('faster_rcnn', 'retinanet', 'cascade_rcnn')}


def distiller(teacher, student, checkpoints, inputs=(), **options):
    torch.manual_seed(0)
    genome = Genome(tuple(TERMS[i] for i in inputs))
    losses = [dict(name='searched', loss=dict(type='SearchedDistillLoss', genome=genome.to_json()))] if inputs else []
    model = DetectionDistiller(
        teacher=dict(config=demo_config_path(f'{teacher}_teacher'), checkpoint=checkpoints[teacher]),
        student=dict(config=student if student.endswith('.py') else demo_config_path(f'{student}_student')),
        distill_losses=losses, **options)
    model.init_weights()
    model.train()
    return model


def one_step(model, batch_family, shapes_root):
    """The step's losses and its DistillContext."""
    captured = []
    if 'searched' in model.distill_losses:
        model.distill_losses['searched'].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    inputs, samples = demo_batch(model, batch_family, shapes_root)
    return model.loss(inputs, samples), (captured[0] if captured else None)


# ------------------------------------------------------------------------------------------------ level pairing
def test_stride_pairing_of_p2_p6_and_p3_p7_pairs_the_common_strides():
    pairs, skipped = pair_levels([8, 16, 32, 64, 128], [4, 8, 16, 32, 64])
    assert [(p.student, p.teacher, p.stride) for p in pairs] == [(0, 1, 8), (1, 2, 16), (2, 3, 32), (3, 4, 64)]
    assert skipped == ['student stride 128', 'teacher stride 4']
    assert [(p.student, p.teacher) for p in pair_levels([4, 8], [4, 8])[0]] == [(0, 0), (1, 1)]
    with pytest.raises(ConfigError, match='level_pairing="index"'):
        pair_levels([8, 16], [4])


def test_faster_rcnn_teacher_and_p3_p7_retinanet_student_pair_by_stride(p3_p7_student, checkpoints, shapes_root):
    logger, lines = MMLogger.get_current_instance(), []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    try:
        model = distiller('faster_rcnn', p3_p7_student, checkpoints, ['global', 'instance'])
    finally:
        logger.removeHandler(handler)
    said = [line for line in lines if 'FPN levels paired by stride' in line]
    assert said == ['[distill] FPN levels paired by stride: s0->t1, s1->t2, s2->t3, s3->t4; '
                    'not distilled: student stride 128, teacher stride 4']
    assert [(p.student, p.teacher) for p in model.level_pairs] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert set(model.distill_losses['searched'].terms) == {'global', 'instance'}
    losses, ctx = one_step(model, 'retinanet', shapes_root)
    # every distilled student map meets the teacher map of its own stride (same size, never resized)
    assert [tuple(s.shape) for s in ctx.student_feats] == [tuple(t.shape) for t in ctx.teacher_feats]
    assert ctx.student_feats[0].shape[-1] == ctx.inputs.shape[-1] // 8
    assert ctx.level_strides == (8.0, 16.0, 32.0, 64.0)
    assert len(ctx.all_teacher_feats) == 5 and ctx.all_teacher_feats[0].shape[-1] == ctx.inputs.shape[-1] // 4
    assert torch.isfinite(losses['loss_searched_global']) and torch.isfinite(losses['loss_searched_instance'])


def test_index_pairing_resizes_the_student_map_to_the_teachers(p3_p7_student, checkpoints, shapes_root):
    model = distiller('faster_rcnn', p3_p7_student, checkpoints, ['global'], level_pairing='index')
    assert [(p.student, p.teacher, p.stride) for p in model.level_pairs] == [(i, i, 4.0 * 2 ** i) for i in range(5)]
    _losses, ctx = one_step(model, 'retinanet', shapes_root)
    for raw, student, teacher in zip(ctx.raw_student_feats, ctx.student_feats, ctx.teacher_feats):
        assert raw.shape[-1] == teacher.shape[-1] // 2   # the student level is one stride coarser ...
        assert student.shape == teacher.shape           # ... bilinearly resized to the teacher's map (PKD)
        assert torch.equal(student, F.interpolate(raw, size=teacher.shape[-2:], mode='bilinear',
                                                  align_corners=False))
    with pytest.raises(ConfigError, match="level_pairing must be one of \\['stride', 'index'\\]"):
        distiller('faster_rcnn', p3_p7_student, checkpoints, level_pairing='size')


# ------------------------------------------------------------------------------------------------ what a pair serves
HETERO_PAIRS = [('faster_rcnn', 'p3_p7_retinanet'), ('retinanet', 'fcos'), ('cascade_rcnn', 'faster_rcnn')]


@pytest.mark.parametrize('teacher,student', HETERO_PAIRS)
def test_every_served_input_trains_the_student_only(teacher, student, p3_p7_student, checkpoints, shapes_root):
    student_family = 'retinanet' if student == 'p3_p7_retinanet' else student
    space = Space.default()
    served = [i for i in space.offered_inputs((teacher, student_family)) if i in TERMS]
    expected = {'faster_rcnn': ['global', 'fg_bg', 'instance', 'logits'],
                'retinanet': list(TERMS), 'cascade_rcnn': list(TERMS)}[teacher]
    assert served == expected
    model = distiller(teacher, p3_p7_student if student == 'p3_p7_retinanet' else student, checkpoints, served)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    keys = [f'loss_searched_{k[5:]}' for i in served for k in TERM_KEYS[i]]
    for _step in range(3):
        optimizer.zero_grad()
        losses, ctx = one_step(model, student_family, shapes_root)
        assert all(k in losses and losses[k].dim() == 0 and torch.isfinite(losses[k]) for k in keys), losses
        for key in keys:   # each term reaches the student's own parameters
            grads = torch.autograd.grad(losses[key], [p for p in model.student.parameters()], retain_graph=True,
                                        allow_unused=True)
            assert any(g is not None and g.abs().sum() > 0 for g in grads), f'{key} gives the student no gradient'
        model.parse_losses(losses)[0].backward()   # what the training loop sums
        assert all(p.grad is None for p in model.teacher.parameters())   # the teacher is never trained
        optimizer.step()
    assert family_of(ctx.teacher).name == teacher and ctx.teacher_family.name == teacher
    if 'logits' in served and teacher == 'retinanet':   # 9 anchors vs 1 point: reduced per position
        pairs = INPUTS['logits']().parts(ctx, ctx.student_family, 'l1')[0].pairs
        assert all(s.shape == t.shape and s.shape[1] == 3 for s, t in pairs)


def test_faster_rcnn_teacher_classifies_the_one_stage_students_boxes(p3_p7_student, checkpoints, shapes_root):
    model = distiller('faster_rcnn', p3_p7_student, checkpoints, ['logits'])
    _losses, ctx = one_step(model, 'retinanet', shapes_root)
    pairs = INPUTS['logits'](max_rois_per_image=5).parts(ctx, ctx.student_family, 'l1')[0].pairs
    assert len(pairs) == 1   # no dense pair: the RPN's objectness is not a class map
    student, teacher = pairs[0]
    assert student.shape == teacher.shape == (5 * len(ctx.data_samples), 3)
    assert student.requires_grad and not teacher.requires_grad
    assert (teacher.sum(1) <= 1 + 1e-6).all()   # foreground part of the teacher's softmax


def test_unservable_inputs_are_dropped_with_their_reason_and_refused_when_forced(p3_p7_student, checkpoints):
    space = Space.default()
    dropped = space.dropped_inputs(('retinanet', 'faster_rcnn'))
    assert 'no RoI head to classify' in dropped['logits']
    assert 'logits' not in space.offered_inputs(('retinanet', 'faster_rcnn'))
    dropped = space.dropped_inputs(('faster_rcnn', 'retinanet'))
    assert set(dropped) == {'localization', 'cross_head', 'mask'} and 'RPN proposals' in dropped['localization']
    assert set(space.dropped_inputs('retinanet')) == {'mask'}   # a homogeneous pair keeps every input its family serves
    assert 'the faster_rcnn teacher: it has no RoI mask head' in space.dropped_inputs(('faster_rcnn', 'mask_rcnn'))['mask']
    with pytest.raises(ConfigError) as error:
        build_ops(space, ['global', 'localization'], ('faster_rcnn', 'retinanet'))
    assert "input 'localization' is not offered for faster_rcnn -> retinanet" in str(error.value)
    assert '\n' not in str(error.value)
    with pytest.raises(ConfigError, match="'localization' is not defined for the pair faster_rcnn -> retinanet"):
        distiller('faster_rcnn', p3_p7_student, checkpoints, ['localization'])
    # GFL's box-distribution KL needs distributions on both sides
    kl = term('localization', [], {'name': 'kl', 'params': {'temperature': 2.0}})
    assert 'needs a detector family' in space.term_problem(kl, ('retinanet', 'gfl'))
    assert space.term_problem(kl, ('gfl', 'gfl')) is None


# ------------------------------------------------------------------------------------------------ cascade teacher
def test_cascade_roi_scores_equal_a_hand_run_of_its_stages(checkpoints, shapes_root):
    model = distiller('cascade_rcnn', 'faster_rcnn', checkpoints, ['logits'])
    _losses, ctx = one_step(model, 'faster_rcnn', shapes_root)
    assert ctx.teacher_family is FAMILIES['cascade_rcnn']
    student_logits, teacher_logits = ctx.student_family.roi_logits(ctx, max_per_image=8)
    rois = ctx.recorded_call('searched.bbox_roi_extractor')[0][1]
    keep = torch.cat([torch.nonzero(rois[:, 0] == i).flatten()[:8] for i in range(len(ctx.data_samples))])
    rois = rois[keep].detach()
    # by hand: each stage classifies the RoIs its predecessor refined (class-agnostic deltas of its own coder);
    # the score is the softmax of the mean of the three stages' logits
    head = model.teacher.roi_head
    feats = ctx.all_teacher_feats
    shapes = [ctx.data_samples[int(i)].metainfo['img_shape'] for i in rois[:, 0]]
    stage_logits, boxes = [], rois
    with torch.no_grad():
        for stage in range(3):
            extractor, bbox_head = head.bbox_roi_extractor[stage], head.bbox_head[stage]
            cls, deltas = bbox_head(extractor(feats[:extractor.num_inputs], boxes))
            stage_logits.append(cls)
            refined = torch.stack([bbox_head.bbox_coder.decode(b[None, 1:], d[None], max_shape=s)[0]
                                   for b, d, s in zip(boxes, deltas, shapes)])
            boxes = torch.cat([boxes[:, :1], refined], 1)
    by_hand = F.softmax(sum(stage_logits) / 3, -1)
    assert len(head.bbox_head) == 3 and not torch.allclose(stage_logits[0], stage_logits[2])
    assert torch.allclose(F.softmax(teacher_logits, -1), by_hand, atol=1e-6)
    # the logits input's RoI pair is exactly that score (the student's own softmax beside it)
    roi_pair = INPUTS['logits'](max_rois_per_image=8).parts(ctx, ctx.student_family, 'l1')[0].pairs[-1]
    assert torch.allclose(roi_pair[1], by_hand, atol=1e-6)
    assert roi_pair[0].requires_grad and student_logits.shape == teacher_logits.shape
    # order-independent: RoIs given out of image order are scored as the same RoIs in order
    shuffled = torch.flip(rois, [0])
    assert torch.allclose(FAMILIES['cascade_rcnn'].roi_class_logits(ctx, shuffled), torch.flip(teacher_logits, [0]),
                          atol=1e-5)


def test_demo_cascade_teacher_trains_and_predicts(shapes_root):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    cfg, faster = (Config.fromfile(demo_config_path(name)) for name in ('cascade_rcnn_teacher', 'faster_rcnn_teacher'))
    assert cfg.model.type == 'CascadeRCNN' and cfg.model.roi_head.num_stages == 3
    assert cfg.model.backbone == faster.model.backbone and cfg.model.rpn_head == faster.model.rpn_head
    assert cfg.train_cfg == faster.train_cfg   # the teachers' 1200-iteration schedule
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert family_of(model) is FAMILIES['cascade_rcnn']
    inputs, samples = demo_batch(model, 'faster_rcnn', shapes_root)
    losses = model.loss(inputs, samples)
    for stage in range(3):
        assert torch.isfinite(losses[f's{stage}.loss_cls']) and torch.isfinite(losses[f's{stage}.loss_bbox'])
    model.eval()
    with torch.no_grad():
        predictions = model.predict(inputs, samples)
    assert len(predictions) == len(samples) and predictions[0].pred_instances.scores.dim() == 1


def test_launch_says_once_which_inputs_the_pair_drops_and_refuses_a_forced_one(tmp_path, monkeypatch):
    from search.controller import Launch
    monkeypatch.chdir(ROOT)   # the demo search configs' paths are relative to the repository root
    base = osp.join(ROOT, 'configs', 'search', 'demo_faster_rcnn_retinanet.py')
    lines = []
    launch = Launch(base, run_dir=str(tmp_path / 'offered'), log=lines.append)
    launch._evolution(launch._open_study())   # what `launch` does before preparing anything or any trial
    dropped = [line for line in lines if 'not offered' in line]
    assert len(dropped) == 1 and "'localization' is not offered for faster_rcnn -> retinanet" in dropped[0] and \
        "'cross_head' is not offered" in dropped[0], lines
    forced = tmp_path / 'forced.py'
    forced.write_text(f"_base_ = [{base!r}]\nsearch = dict(stage1_inputs=['global', 'localization'])\n")
    with pytest.raises(ConfigError, match="input 'localization' is not offered for faster_rcnn -> retinanet: the "
                                          "faster_rcnn dense boxes are class-agnostic RPN proposals"):
        Launch(str(forced), run_dir=str(tmp_path / 'forced'), log=lines.append).run()


def test_proxy_level_pairing_reaches_the_trial_distiller_and_the_export(checkpoints, shapes_root):
    from search.export import build_training_config
    from workers.proxy import build_distiller
    from workers.settings import check_search_config
    cfg = load_search_config(osp.join(ROOT, 'configs', 'search', 'demo_faster_rcnn_retinanet.py'), ROOT)
    raw = dict(cfg.raw, teacher=dict(cfg.raw['teacher'], checkpoint=checkpoints['faster_rcnn']),
               data=dict(data_root=shapes_root), proxy=dict(cfg.raw['proxy'], level_pairing='index'))
    settings = check_search_config(raw)
    assert settings.level_pairing == 'index' and check_search_config(cfg.raw).level_pairing == 'stride'
    model = build_distiller(raw, None, settings, base_dir=ROOT)
    assert model.level_pairing == 'index'
    assert build_training_config(raw, [], 'x.py')['model']['level_pairing'] == 'index'
    assert 'level_pairing' not in build_training_config(cfg.raw, [], 'x.py')['model']   # the default stays implicit
    with pytest.raises(ConfigError, match="proxy.level_pairing.*expected one of \\['stride', 'index'\\], got 'size'"):
        check_search_config(dict(raw, proxy=dict(raw['proxy'], level_pairing='size')), 'my.py')


# ------------------------------------------------------------------------------------------------ cascade mask teacher
@pytest.fixture(scope='module')
def cascade_mask_teacher(tmp_path_factory):
    """The demo Cascade R-CNN teacher with the demo Mask R-CNN's mask branch on each of its 3 stages (random
    weights, saved as a checkpoint): (config, checkpoint)."""
    from distill_core.checkpoint import save_atomic
    from distill_core.model_config import build_in_mmdet_scope
    from mmengine.config import Config
    folder = tmp_path_factory.mktemp('cascade_mask')
    config = folder / 'cascade_mask_rcnn_teacher.py'
    mask = Config.fromfile(demo_config_path('mask_rcnn_teacher')).model.roi_head
    config.write_text(f"_base_ = [{demo_config_path('cascade_rcnn_teacher')!r}]\n"
                      f"model = dict(roi_head=dict(mask_roi_extractor={mask.mask_roi_extractor.to_dict()!r},\n"
                      f"                           mask_head={mask.mask_head.to_dict()!r}))\n")
    torch.manual_seed(0)
    model = build_in_mmdet_scope(Config.fromfile(str(config)).model)
    model.init_weights()
    checkpoint = str(folder / 'cascade_mask_rcnn_teacher.pth')
    save_atomic({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    return str(config), checkpoint


def test_cascade_mask_teacher_masks_are_the_mean_of_its_stages(cascade_mask_teacher, shapes_root):
    from .test_space_mask import mask_term
    config, checkpoint = cascade_mask_teacher
    genome = Genome((mask_term(),))
    torch.manual_seed(0)
    model = DetectionDistiller(
        teacher=dict(config=config, checkpoint=checkpoint), student=dict(config=demo_config_path('mask_rcnn_student')),
        distill_losses=[dict(name='searched', loss=dict(type='SearchedDistillLoss', genome=genome.to_json()))])
    model.init_weights()
    model.train()
    assert family_of(model.teacher) is FAMILIES['cascade_mask_rcnn'] and len(model.teacher.roi_head.mask_head) == 3
    losses, ctx = one_step(model, 'mask_rcnn', shapes_root)
    assert torch.isfinite(losses['loss_searched_mask']) and losses['loss_searched_mask'] > 0
    losses['loss_searched_mask'].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.student.roi_head.mask_head.conv_logits.weight.grad.abs().sum() > 0
    # by hand: each stage's mask branch on the student's positive RoIs; MMDetection's test-time mask is the mean of
    # the stages' sigmoids
    rois = ctx.recorded_call('searched.mask_roi_extractor')[0][1].detach()
    head = model.teacher.roi_head
    with torch.no_grad():
        stages = [head._mask_forward(stage, tuple(ctx.all_teacher_feats), rois)['mask_preds'].sigmoid()
                  for stage in range(3)]
    assert not torch.allclose(stages[0], stages[2])
    (part,) = INPUTS['mask']().parts(ctx, ctx.student_family, 'l2')
    ((student, teacher),) = part.pairs
    torch.testing.assert_close(teacher, sum(stages) / 3)
    assert student.requires_grad and student.shape == teacher.shape == (len(rois), 3, 28, 28)


def test_a_cascade_mask_teacher_is_recognised_in_a_search_config_and_serves_mask(cascade_mask_teacher, tmp_path,
                                                                                monkeypatch):
    monkeypatch.chdir(ROOT)
    config, checkpoint = cascade_mask_teacher
    search = tmp_path / 'cascade_mask_search.py'
    search.write_text(f"_base_ = [{osp.join(ROOT, 'configs', 'search', 'demo_mask_rcnn.py')!r}]\n"
                      f"teacher = dict(config={config!r}, checkpoint={checkpoint!r})\n")
    cfg = load_search_config(str(search), ROOT)
    assert cfg.families() == ('cascade_mask_rcnn', 'mask_rcnn')
    space = Space.from_file(cfg.space_path)
    assert 'mask' in space.offered_inputs(cfg.families()) and 'logits' in space.offered_inputs(cfg.families())
    # a cascade student has per-stage mask heads: the input is not offered to it, with the reason
    assert "its mask heads are per-stage lists" in space.input_problem('mask', ('mask_rcnn', 'cascade_mask_rcnn'))
    assert space.input_problem('mask', ('cascade_rcnn', 'mask_rcnn')).endswith(
        'the cascade_rcnn teacher: it has no RoI mask head')
