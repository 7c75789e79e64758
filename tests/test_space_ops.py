"""Search-space transforms and distances against hand-computed values; gradients; mask sharing; no state."""
import math

import pytest
import torch
import torch.nn.functional as F

import distill_core  # noqa: F401  (registers the ops)
from distill_core import DISTANCES, TRANSFORMS
from distill_core.transforms import cascade_pair

SLOT_OPS = ['no', 'satt', 'catt', 'natt', 'mask', 'scale_r1', 'scale_r2', 'multi_scale_r4', 'local_s1', 'local_s2',
            'local_s4', 'scale', 'batch', 'channel', 'norm_HW', 'norm_C', 'norm_N', 'softmax_N', 'softmax_C',
            'softmax_HW', 'logsoftmax_N', 'logsoftmax_C', 'logsoftmax_HW', 'min_max_normalize', 'batchnorm', 'pow2']
FEATURE_DISTANCES = ['l1', 'l2', 'smooth_l1', 'kl', 'cos', 'pearson', 'correlation']


def op(name, **kw):
    return TRANSFORMS.build(dict(type=name, **kw))


def dist(name, **kw):
    return DISTANCES.build(dict(type=name, **kw))


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


# ------------------------------------------------------------------------------------------ slot 1
def test_channel_attention_hand_computed():
    x = t([[[[1.0, 3.0]], [[-2.0, 0.0]]]])               # 1 x 2 x 1 x 2; mean_HW |x| = (2, 1)
    a = [2 * p for p in softmax([2 / 0.5, 1 / 0.5])]      # C * softmax(energy / T)
    expected = t([[[[1 * math.sqrt(a[0]), 3 * math.sqrt(a[0])]], [[-2 * math.sqrt(a[1]), 0.0]]]])
    assert torch.allclose(op('catt')(x), expected)
    a = [2 * p for p in softmax([2 / 2.0, 1 / 2.0])]      # the temperature is a parameter
    assert torch.allclose(op('catt', temperature=2.0)(x)[0, 0, 0, 0], t(math.sqrt(a[0])))


def test_spatial_attention_hand_computed():
    x = t([[[[1.0, 3.0]], [[1.0, 1.0]]]])                # mean_C |x| per position = (1, 2)
    a = [2 * p for p in softmax([1 / 0.5, 2 / 0.5])]      # HW * softmax_HW
    expected = x * t([[[[math.sqrt(a[0]), math.sqrt(a[1])]]]])
    assert torch.allclose(op('satt')(x), expected)


@pytest.mark.parametrize('name', ['catt', 'satt'])
def test_attention_gradient_stays_finite_when_the_softmax_underflows(name):
    """One dominant channel/position drives the other softmax entries to exactly 0 in float32: sqrt(0) has an
    infinite derivative, which made a whole training step NaN (found training the shipped retinanet_x101_r50
    genome: catt at T=0.5 on RoI features)."""
    x = torch.zeros(2, 4, 3, 3)
    x[:, 0] = 200.0                       # energy gap 400 / T=0.5: exp(-800) underflows
    x[:, :, 0, 0] += 200.0
    x[:, 1:, 1:, 1:] = 1e-3
    x.requires_grad_()
    out = TRANSFORMS.build(dict(type=name, temperature=0.5))(x)
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all()
    probe = x.detach().clone().double()   # and the values are still x * sqrt(count * softmax)
    energy = probe.abs().mean(dim=(2, 3), keepdim=True) if name == 'catt' else probe.abs().mean(1, keepdim=True)
    dims = 1 if name == 'catt' else (2, 3)
    count = 4 if name == 'catt' else 9
    soft = torch.softmax(energy.flatten(2) / 0.5, dim=1).view_as(energy) if name == 'catt' else \
        torch.softmax((energy / 0.5).flatten(2), dim=2).view_as(energy)
    assert torch.allclose(out.detach().double(), probe * torch.sqrt(count * soft), atol=1e-4), dims


def test_batch_attention_replaces_x():
    x = t([[1.0], [2.0]])
    p = softmax([1 / 0.5, 2 / 0.5])
    assert torch.allclose(op('natt')(x), t([[2 * p[0]], [2 * p[1]]]))


def test_mask_is_shared_between_student_and_teacher():
    torch.manual_seed(0)
    s, te = torch.randn(4, 8, 16, 16) + 5, torch.randn(4, 8, 16, 16) - 5   # no exact zeros
    mask = op('mask', ratio=0.65)
    ms, mt = mask(s, te)
    assert torch.equal(ms == 0, mt == 0)
    zero = ms == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero)), 'a masked position is masked in every channel'
    assert abs(zero.float().mean().item() - 0.65) < 0.05
    ms2, _ = mask.forward_pair(s, te)
    assert not torch.equal(ms2 == 0, zero), 'a new draw every step'
    assert 0.45 < (op('mask', ratio=0.5)(s) == 0).float().mean().item() < 0.55
    with pytest.raises(ValueError):
        op('mask', ratio=1.0)


# ------------------------------------------------------------------------------------------ slot 2
def test_pooling_ops():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    assert op('scale_r1')(x) is x
    assert torch.equal(op('scale_r2')(x), torch.tensor([[[[4.0, 5.0], [7.0, 8.0]]]]))
    x5 = torch.arange(25.0).view(1, 1, 5, 5)
    assert torch.equal(op('multi_scale_r4')(x5), torch.tensor([[[[18.0, 19.0], [23.0, 24.0]]]]))
    # the no-grad (teacher) path and the autograd (student) path give identical values, odd sizes included
    y = torch.randn(2, 3, 7, 10)
    for name in ('scale_r2', 'multi_scale_r4'):
        assert torch.equal(op(name)(y), op(name)(y.clone().requires_grad_()).detach())
    assert torch.equal(op('scale_r2')(torch.arange(5.0).view(1, 1, 5)), torch.tensor([[[1.0, 3.0, 4.0]]]))



@pytest.mark.parametrize('shape', [(2, 3, 8, 10), (2, 3, 7, 9), (1, 2, 1, 1), (2, 64, 33, 32)])
@pytest.mark.parametrize('ties', [False, True])
def test_scale_r2_gradient_is_max_pool2d_gradient(shape, ties):
    """The student-side 2x2 pool (own argmax on large maps) routes the gradient exactly as max_pool2d (ceil mode):
    to the first maximum of each window in row-major order, ties (e.g. masked zeros) included."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, shape, generator=g).double() if ties else torch.randn(shape, generator=g).double()
    grad_out = torch.randn(shape[0], shape[1], (shape[2] + 1) // 2, (shape[3] + 1) // 2, generator=g).double()
    for layout in (torch.contiguous_format, torch.channels_last):
        mine = x.clone().contiguous(memory_format=layout).requires_grad_()
        ref = x.clone().requires_grad_()
        out = op('scale_r2')(mine)
        assert torch.equal(out, F.max_pool2d(ref, 2, 2, ceil_mode=True))
        out.backward(grad_out)
        F.max_pool2d(ref, 2, 2, ceil_mode=True).backward(grad_out)
        assert torch.equal(mine.grad, ref.grad)

def test_local_patch_ops():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    p = op('local_s2')(x)
    assert p.shape == (1, 4, 2, 2)
    assert torch.equal(p[0, 0], torch.tensor([[0.0, 1.0], [4.0, 5.0]]))
    assert torch.equal(p[0, 1], torch.tensor([[2.0, 3.0], [6.0, 7.0]]))
    assert torch.equal(p[0, 3], torch.tensor([[10.0, 11.0], [14.0, 15.0]]))
    padded = op('local_s2')(torch.arange(9.0).view(1, 1, 3, 3))     # padded to 4 x 4 with zeros
    assert torch.equal(padded[0, 3], torch.tensor([[8.0, 0.0], [0.0, 0.0]]))
    assert op('local_s4')(torch.randn(2, 3, 6, 9)).shape == (2, 3 * 2 * 3, 4, 4)
    y = torch.randn(2, 3, 4, 4)
    assert torch.equal(op('local_s1')(y), y.reshape(2, 48, 1, 1))
    assert torch.equal(op('scale')(t([1.0, -3.0])), t([1.0, -1.0]))


# ------------------------------------------------------------------------------------------ slot 3
def test_shape_and_norm_ops():
    x = torch.randn(2, 3, 4, 5)
    assert op('batch')(x).shape == (2, 60)
    assert op('channel')(x).shape == (2, 3, 20)
    assert torch.allclose(op('norm_HW')(t([[[[3.0, 4.0]]]])), t([[[[0.6, 0.8]]]]))
    assert torch.allclose(op('norm_C')(t([[[[3.0]], [[4.0]]]])), t([[[[0.6]], [[0.8]]]]))
    assert torch.allclose(op('norm_N')(t([[3.0], [4.0]])), t([[0.6], [0.8]]))
    assert torch.allclose(op('min_max_normalize')(t([1.0, 2.0, 3.0])), t([0.0, 0.5, 1.0]))
    assert torch.equal(op('pow2')(t([-3.0, 2.0])), t([9.0, 4.0]))


def test_softmax_ops():
    x = t([[0.0, math.log(3.0)]])
    assert torch.allclose(op('softmax_C')(x), t([[0.25, 0.75]]))
    assert torch.allclose(op('logsoftmax_C')(x), t([[math.log(0.25), math.log(0.75)]]))
    assert torch.allclose(op('softmax_C', temperature=2.0)(2 * x), t([[0.25, 0.75]]))
    assert torch.allclose(op('softmax_N')(x.T), t([[0.25], [0.75]]))
    assert torch.allclose(op('softmax_HW')(torch.zeros(1, 2, 2, 2, dtype=torch.float64)),
                          torch.full((1, 2, 2, 2), 0.25, dtype=torch.float64))   # over H x W jointly
    assert torch.allclose(op('logsoftmax_HW')(torch.zeros(1, 1, 2, 2)), torch.full((1, 1, 2, 2), math.log(0.25)))


def test_batchnorm_is_stateless_standardisation():
    bn = op('batchnorm')
    assert not list(bn.parameters()) and not list(bn.buffers())
    x = t([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])                         # one channel: mean 4, biased var 5
    expected = (x - 4.0) / math.sqrt(5.0 + 1e-5)
    assert torch.allclose(bn(x), expected)
    bn(torch.randn(8, 1, 3, 3, dtype=torch.float64) * 100)          # another step in between
    assert torch.allclose(bn(x), expected), 'no state leaks between calls'
    bn.eval()
    assert torch.allclose(bn(x), expected), 'batch statistics in eval mode too'


@pytest.mark.parametrize('name', SLOT_OPS)
@pytest.mark.parametrize('shape', [(2, 4, 6, 5), (2, 4, 7), (2, 6)])
def test_every_op_runs_on_4d_3d_2d(name, shape):
    out = op(name)(torch.randn(*shape))
    assert out.shape[0] == 2 and torch.isfinite(out).all()


@pytest.mark.parametrize('name', SLOT_OPS)
def test_gradient_reaches_student_never_teacher(name):
    torch.manual_seed(1)
    s = torch.randn(3, 4, 6, 6, requires_grad=True)
    te = torch.randn(3, 4, 6, 6, requires_grad=True)
    out_s, out_t = cascade_pair([op(name)], s, te)
    assert out_s.shape == out_t.shape
    dist('l2')(out_s, out_t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert te.grad is None


# ------------------------------------------------------------------------------------------ distances
def test_distances_hand_computed():
    s, te = t([[1.0, 2.0]]), t([[0.0, 4.0]])
    assert dist('l1')(s, te).item() == pytest.approx(1.5)
    assert dist('l2')(s, te).item() == pytest.approx(2.5)
    assert dist('smooth_l1')(t([0.5, 2.0]), t([0.0, 0.0])).item() == pytest.approx((0.125 + 1.5) / 2)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert dist('kl')(t([[0.0, 0.0]]), t([[0.0, math.log(3.0)]])).item() == pytest.approx(kl)
    assert dist('kl', temperature=2.0)(t([[0.0, 0.0]]), t([[0.0, 2 * math.log(3.0)]])).item() == \
        pytest.approx(4 * kl)
    assert dist('kl', dim='HW')(t([[[0.0, 0.0]]]), t([[[0.0, math.log(3.0)]]])).item() == pytest.approx(kl)


def test_cos_is_a_distance():
    assert dist('cos')(t([[1.0, 0.0]]), t([[1.0, 0.0]])).item() == pytest.approx(0.0)
    assert dist('cos')(t([[1.0, 0.0]]), t([[-1.0, 0.0]])).item() == pytest.approx(2.0)
    assert dist('cos')(t([[1.0, 0.0]]), t([[1.0, 1.0]])).item() == pytest.approx(1 - 1 / math.sqrt(2))


def test_pearson_and_correlation():
    assert dist('pearson')(t([[1.0, 2.0, 3.0]]), t([[2.0, 4.0, 6.0]])).item() == pytest.approx(0.0)
    assert dist('pearson')(t([[1.0, 2.0, 3.0]]), t([[3.0, 2.0, 1.0]])).item() == pytest.approx(2.0)
    c = -1.0 / (1.0 + 1e-5)                     # standardised [-1, 1] vs [1, -1], eps 1e-5 in the variance
    assert dist('correlation')(t([[1.0], [3.0]]), t([[3.0], [1.0]])).item() == pytest.approx((1 - c) ** 2)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert dist('correlation')(x, x).item() < 1e-4


def test_ssim():
    x = torch.randn(2, 3, 5, 5)
    assert dist('ssim')(x, x).item() == pytest.approx(0.0, abs=1e-6)
    c1 = 1e-4
    value = dist('ssim')(torch.ones(1, 1, 4, 4, dtype=torch.float64), torch.zeros(1, 1, 4, 4, dtype=torch.float64))
    assert value.item() == pytest.approx(1 - c1 / (1 + c1))
    with pytest.raises(ValueError):
        dist('ssim')(torch.randn(2, 6), torch.randn(2, 6))


def test_iou_and_giou():
    a, b = t([[0.0, 0.0, 2.0, 2.0]]), t([[1.0, 1.0, 3.0, 3.0]])
    assert dist('iou')(a, b).item() == pytest.approx(6 / 7, rel=1e-5)
    assert dist('giou')(a, b).item() == pytest.approx(1 - (1 / 7 - 2 / 9), rel=1e-5)
    assert dist('iou')(a, a).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize('name', FEATURE_DISTANCES + ['ssim'])
def test_distance_zero_at_match_and_gradient(name):
    torch.manual_seed(2)
    s = torch.randn(3, 4, 5, 5, requires_grad=True)
    te = torch.randn(3, 4, 5, 5, requires_grad=True)
    d = dist(name)
    assert d(te.detach(), te.detach()).item() == pytest.approx(0.0, abs=1e-4)
    value = d(*cascade_pair([], s, te))
    assert value.dim() == 0 and value.item() > 0
    value.backward()
    assert s.grad.abs().sum() > 0 and te.grad is None


def test_box_distance_gradient():
    s = t([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 5.0]]).requires_grad_()
    te = t([[0.5, 0.0, 2.0, 3.0], [1.0, 2.0, 4.0, 4.0]])
    for name in ('iou', 'giou'):
        s.grad = None
        dist(name)(s, te).backward()
        assert s.grad.abs().sum() > 0
