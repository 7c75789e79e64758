"""GKD: CAM-weighted imitation (hand formula), CAMs from the training batch, and the fixed defect: the
distillation term has a non-zero gradient on the student."""
import pytest
import torch

import distill_core
from distill_core.distiller import DetectionDistiller
from distill_core.methods.fgd import FGDLoss, channel_attention, spatial_attention
from distill_core.methods.gkd import GKDLoss, confident_detections, gradient_cams

from .demo_utils import build_teacher_checkpoint, demo_batch, demo_config_path

distill_core.register_all_modules()   # the losses, hooks and ops the configs name

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope='module')
def _mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)


def _masks(n, h, w):
    fg = torch.zeros(n, 1, h, w)
    fg[:, :, 1:3, 1:4] = 1 / 6
    bg = (fg == 0).float() / (fg == 0).float().sum(dim=(2, 3), keepdim=True)
    return fg, bg


def test_mode_none_reduces_to_fgd_foreground():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    masks = _masks(2, 5, 5)
    gkd = GKDLoss(4, 4, alpha_gkd=3.0, cam_mode='none')(s, t, masks=masks)
    fgd = FGDLoss(4, 4, alpha_fgd=3.0, beta_fgd=0, gamma_fgd=0, lambda_fgd=0)(s, t, masks=masks)
    assert gkd.item() == pytest.approx(fgd.item(), rel=1e-6)


def test_cam_weights_hand_formula_and_missing_cams():
    torch.manual_seed(1)
    s, t = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    fg, bg = _masks(2, 5, 5)
    cam_t, cam_s = torch.rand(2, 1, 5, 5), torch.rand(2, 1, 5, 5)
    loss = GKDLoss(4, 4, alpha_gkd=2.0, beta_gkd=0.5, gamma_gkd=0.0, cam_mode='both', split_terms=True)
    terms = loss(s, t, masks=(fg, bg), cam_teacher=cam_t, cam_student=cam_s)
    att = spatial_attention(t, 0.5) * channel_attention(t, 0.5)
    expected = 2.0 * (att * fg * cam_t * cam_s * (s - t) ** 2).sum() / 2
    assert terms['loss_fea'].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms['cam_gap'].item() == pytest.approx(0.5 * (cam_t - cam_s).abs().mean().item(), rel=1e-6)
    teacher_only = GKDLoss(4, 4, alpha_gkd=2.0, cam_mode='teacher')(s, t, masks=(fg, bg), cam_teacher=cam_t)
    expected_t = 2.0 * (att * fg * cam_t * (s - t) ** 2).sum() / 2
    assert teacher_only.item() == pytest.approx(expected_t.item(), rel=1e-5)
    with pytest.raises(ValueError, match='cam_student'):
        loss(s, t, masks=(fg, bg), cam_teacher=cam_t)


def _distiller(tmp_path, **loss_kwargs):
    ckpt = build_teacher_checkpoint('retinanet', tmp_path)
    loss = dict(type='GKDLoss', student_channels=64, teacher_channels=64, split_terms=True, **loss_kwargs)
    model = DetectionDistiller(
        teacher=dict(config=demo_config_path('retinanet_teacher'), checkpoint=ckpt),
        student=dict(config=demo_config_path('retinanet_student')),
        distill_losses=[dict(name='gkd', levels='all', loss=loss)])
    model.init_weights()
    return model


def _confident(head):
    """A randomly initialised head scores ~0.01; raise its classification bias so it 'detects' things."""
    with torch.no_grad():
        head.retina_cls.bias.fill_(3.0)


def test_cams_from_own_confident_detections(tmp_path, shapes_root):
    model = _distiller(tmp_path)
    _confident(model.teacher.bbox_head)
    inputs, samples = demo_batch(model, 'retinanet', shapes_root)
    feats = model.teacher.extract_feat(inputs)
    pseudo = confident_detections(model.teacher, feats, inputs, samples, score_thr=0.3, topk=10)
    assert all(0 < len(p) <= 10 for p in pseudo)
    cams = gradient_cams(model.teacher, feats, inputs, samples)
    assert len(cams) == 5
    for cam, feat in zip(cams, feats):
        assert cam.shape == (len(samples), 1) + tuple(feat.shape[-2:])
        assert not cam.requires_grad
        assert cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert all(cams[0][i].max() > 0.99 for i in range(len(samples)))   # min-max normalised per image
    assert all(p.grad is None for p in model.teacher.parameters())
    # no confident detection -> the image's CAM is zero (product decision), here for a plain random head
    model2 = _distiller(tmp_path)
    feats2 = model2.teacher.extract_feat(inputs)
    assert all(c.abs().sum() == 0 for c in gradient_cams(model2.teacher, feats2, inputs, samples))


def test_distillation_term_trains_the_student(tmp_path, shapes_root):
    """The reference's GKD term has no gradient; ours must move the student's parameters."""
    model = _distiller(tmp_path, alpha_gkd=1.0, cam_mode='both', pseudo_gt='gt')
    model.train()
    inputs, samples = demo_batch(model, 'retinanet', shapes_root)
    losses = model.loss(inputs, samples)
    keys = [k for k in losses if k.startswith('loss_gkd')]
    assert sorted(keys) == sorted(f'loss_gkd_fea_fpn{i}' for i in range(5))
    assert all(f'gkd_cam_gap_fpn{i}' in losses for i in range(5))
    distill = sum(losses[k] for k in keys)
    assert torch.isfinite(distill) and distill > 0
    # CAM passes must not have touched any parameter gradient
    assert all(p.grad is None for p in model.parameters())
    distill.backward()
    grads = [p.grad for p in model.student.neck.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.teacher.parameters())
