"""CrossKD and BCKD on the demo pairs (randomly initialised teachers): the crossed forward against the teacher's
later head layers run by hand, where the gradient goes, and BCKD's terms against hand-computed values."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

import distill_core
from distill_core.cross_head import align_statistics, resolve_cross_index
from distill_core.distiller import DetectionDistiller
from distill_core.errors import ConfigError
from distill_core.families import FAMILIES
from distill_core.methods.dense_kd import quality_focal_bce

from .demo_utils import ROOT, build_teacher_checkpoint, demo_batch, demo_config_path

distill_core.register_all_modules()
torch.set_num_threads(2)


# the shipped demo configs, per family (GFL: CrossKD and BCKD in one distiller, sharing the step's targets)
METHODS = {'gfl': ('crosskd', 'bckd'), 'retinanet': ('crosskd',), 'fcos': ('crosskd',)}


@pytest.fixture(scope='module')
def steps(tmp_path_factory, shapes_root):
    """Per family: the distiller of its shipped demo configs, one training step's losses and its DistillContext."""
    tmp = tmp_path_factory.mktemp('crosskd')
    out = {}
    for family, methods in METHODS.items():
        losses = [dict(entry) for method in methods for entry in
                  Config.fromfile(f'{ROOT}/configs/distillers/{method}/{method}_demo_{family}.py').model.distill_losses]
        torch.manual_seed(0)
        model = DetectionDistiller(
            teacher=dict(config=demo_config_path(f'{family}_teacher'), checkpoint=build_teacher_checkpoint(family, tmp)),
            student=dict(config=demo_config_path(f'{family}_student')), distill_losses=losses)
        model.init_weights()
        model.train()
        captured = []
        model.distill_losses[methods[0]].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        inputs, samples = demo_batch(model, family, shapes_root)
        out[family] = (model, model.loss(inputs, samples), captured[0])
    return out


@pytest.mark.parametrize('family', ['gfl', 'retinanet', 'fcos'])
def test_crossed_forward_is_the_teacher_head_after_the_student_towers(family, steps):
    model, losses, ctx = steps[family]
    s_head, t_head = model.student.bbox_head, model.teacher.bbox_head
    index = resolve_cross_index(FAMILIES[family], s_head, t_head, 'auto')
    assert index == 1 and s_head.stacked_convs == 2   # the published rule on the demo's 2-conv towers
    # the student's towers were recorded during its own loss forward (no second pass)
    assert len(ctx.recorded['cross_head.cls_convs.1']) == ctx.num_levels
    crossed = ctx.cache['crossed_outputs_1']
    with torch.no_grad():
        for level, (s_feat, t_feat) in enumerate(zip(ctx.raw_student_feats, ctx.teacher_feats)):
            s_cls, s_reg = s_head.cls_convs[0](s_feat), s_head.reg_convs[0](s_feat)
            t_cls, t_reg = t_head.cls_convs[0](t_feat), t_head.reg_convs[0](t_feat)
            # per-channel standardisation over N, H, W (unbiased std), then the teacher's statistics
            def aligned(s, t):
                s_n = (s - s.mean((0, 2, 3), keepdim=True)) / (s.std((0, 2, 3), keepdim=True) + 1e-6)
                return s_n * t.std((0, 2, 3), keepdim=True) + t.mean((0, 2, 3), keepdim=True)
            cls = t_head.cls_convs[1](F.relu(aligned(s_cls, t_cls)))
            reg = t_head.reg_convs[1](F.relu(aligned(s_reg, t_reg)))
            if family == 'gfl':
                expected = (t_head.gfl_cls(cls), t_head.scales[level](t_head.gfl_reg(reg)))
            elif family == 'retinanet':
                expected = (t_head.retina_cls(cls), t_head.retina_reg(reg))
            else:   # FCOS in eval mode (the teacher): clamp, times the stride; centerness on the reg tower
                bbox = t_head.scales[level](t_head.conv_reg(reg)).clamp(min=0) * t_head.strides[level]
                expected = (t_head.conv_cls(cls), bbox, t_head.conv_centerness(reg))
            for kind, value in enumerate(expected):
                torch.testing.assert_close(crossed[kind][level], value, rtol=1e-4, atol=1e-5)
        # the teacher's own predictions (the targets) are its head's forward
        for ours, reference in zip(ctx.teacher_head_outputs, t_head(list(ctx.teacher_feats))):
            for a, b in zip(ours, reference):
                torch.testing.assert_close(a, b)
    assert {'loss_crosskd_cls', 'loss_crosskd_reg'} <= set(losses)


def test_gradient_reaches_the_student_through_the_frozen_teacher_head(steps):
    model, losses, _ctx = steps['gfl']
    (losses['loss_crosskd_cls'] + losses['loss_crosskd_reg']).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    grads = {name: p.grad for name, p in model.student.named_parameters()}
    reached = lambda name: grads[name] is not None and bool(grads[name].abs().sum() > 0)   # noqa: E731
    # the tower modules before the cross point, the neck and the backbone get the KD gradient ...
    assert reached('bbox_head.cls_convs.0.conv.weight') and reached('bbox_head.reg_convs.0.conv.weight')
    assert reached('neck.fpn_convs.0.conv.weight') and reached('backbone.conv1.weight')
    # ... the student's own tower after the cross point and its predictors do not (only the GT losses train them)
    assert all(grads[name] is None for name in grads if name.startswith(('bbox_head.cls_convs.1',
                                                                         'bbox_head.gfl_cls', 'bbox_head.scales')))


def test_crosskd_terms_by_hand_and_bad_inputs(steps):
    model, losses, ctx = steps['retinanet']
    family = FAMILIES['retinanet']
    head = model.teacher.bbox_head
    targets = ctx.cache['dense_targets']
    crossed, teacher = ctx.cache['crossed_outputs_1'], ctx.teacher_head_outputs
    flat = lambda maps, k: torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, k) for m in maps], 1)  # noqa
    r, t = flat(crossed[0], 3), flat(teacher[0], 3)
    p = t.sigmoid()
    bce = -(p * F.logsigmoid(r) + (1 - p) * F.logsigmoid(-r))
    cls = (bce * (r.sigmoid() - p).abs() * targets.label_weights[..., None]).sum() / targets.num_pos
    torch.testing.assert_close(losses['loss_crosskd_cls'], cls * 1.0, rtol=1e-4, atol=1e-6)
    from mmdet.structures.bbox import bbox_overlaps
    r_boxes, t_boxes = family.dense_boxes(head, crossed).boxes, family.dense_boxes(head, teacher).boxes
    weights = p.amax(-1) * (targets.label_weights > 0)
    giou = bbox_overlaps(r_boxes, t_boxes, mode='giou', is_aligned=True, eps=1e-7)
    torch.testing.assert_close(losses['loss_crosskd_reg'], ((1 - giou) * weights).sum() / targets.num_pos,
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match='integer in 0..2'):
        resolve_cross_index(family, model.student.bbox_head, None, 3)
    with pytest.raises(ConfigError, match='no layered dense head'):
        resolve_cross_index(FAMILIES['faster_rcnn'], None, None, 'auto')


def test_bckd_terms_equal_hand_computed_values(steps):
    model, losses, ctx = steps['gfl']
    targets = ctx.cache['dense_targets']
    s_out, t_out = ctx.student_head_outputs, ctx.teacher_head_outputs
    # hand computation level by level, as the reference (a level without positives adds nothing)
    n_pos = max(float(targets.positives.sum()), 1.0)
    cls_total, loc_total, start = 0.0, 0.0, 0
    head = model.student.bbox_head
    anchors = head.prior_generator.grid_priors([m.shape[-2:] for m in s_out[0]], device='cpu')
    for level, size in enumerate(targets.level_sizes):
        positions = slice(start, start + size)
        start += size
        if not targets.positives[:, positions].any():
            continue
        s = s_out[0][level].permute(0, 2, 3, 1).reshape(-1, 3)
        p = t_out[0][level].permute(0, 2, 3, 1).reshape(-1, 3).sigmoid()
        w = targets.label_weights[:, positions].reshape(-1)
        bce = F.binary_cross_entropy_with_logits(s, p, reduction='none')
        cls_total += (bce * (p - s.sigmoid()).abs() * w[:, None]).sum() / n_pos
        stride = head.prior_generator.strides[level][0]
        centers = head.anchor_center(anchors[level]).repeat(s_out[0][level].shape[0], 1) / stride

        def decode(dist):
            d = dist.permute(0, 2, 3, 1).reshape(-1, 4, 17).softmax(-1) @ torch.arange(17.0)
            return torch.cat([centers - d[:, :2], centers + d[:, 2:]], 1)
        from mmdet.structures.bbox import bbox_overlaps
        giou = bbox_overlaps(decode(s_out[1][level]), decode(t_out[1][level]), mode='giou', is_aligned=True,
                             eps=1e-7)
        gap = (p - s.sigmoid()).abs().amax(-1)
        loc_total += ((1 - giou) * w * gap).sum() / n_pos
    torch.testing.assert_close(losses['loss_bckd_cls'], cls_total * 1.0, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(losses['loss_bckd_loc'], loc_total * 4.0, rtol=1e-4, atol=1e-6)


def test_quality_focal_bce_small_example():
    logits = torch.tensor([[0.0, 2.0]])
    probs = torch.tensor([[0.5, 0.25]])
    # BCE(0, 0.5) = log 2, |0.5 - 0.5| = 0; BCE(2, .25) = log(1 + e^2) - 0.25 * 2, times |sigmoid(2) - .25|
    expected = (torch.log1p(torch.exp(torch.tensor(2.0))) - 0.5) * (torch.sigmoid(torch.tensor(2.0)) - 0.25)
    value = quality_focal_bce(logits, probs, beta=1.0)
    assert value[0, 0].item() == pytest.approx(0.0, abs=1e-7)
    assert value[0, 1].item() == pytest.approx(expected.item(), rel=1e-6)
    assert quality_focal_bce(logits, probs, beta=0.0)[0, 0].item() == pytest.approx(torch.log(torch.tensor(2.)).item())
