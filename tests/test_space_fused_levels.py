"""Level fusion in the searched loss: a part's position-wise cascade tail and distance run once on its FPN levels
concatenated, with the same value and gradients as the per-level loop (random masks included); the ops' and
distances' position-wise flags; the fast cosine similarity."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

import distill_core  # noqa: F401  (registers the ops)
from distill_core import DISTANCES, TRANSFORMS
from distill_core.context import DistillContext
from distill_core.distances import cosine_similarity
from distill_core.genome import OpSpec, Term
from distill_core.searched_loss import SearchedTerm
from distill_core.transforms import cascade_pair

SUFFIX_OPS = ['no', 'scale_r1', 'mask', 'natt', 'scale', 'channel', 'norm_C', 'norm_N', 'softmax_N', 'softmax_C',
              'logsoftmax_N', 'logsoftmax_C', 'pow2']
DISTANCE_SPECS = [('l1', {}), ('l2', {}), ('smooth_l1', {}), ('kl', {'dim': 'C'}), ('kl', {'dim': 'N'}), ('cos', {}),
                  ('pearson', {}), ('correlation', {})]
LEVEL_SHAPES = [(2, 6, 8, 8), (2, 6, 4, 4), (2, 6, 3, 5), (2, 6, 1, 1)]


def searched_term(ops, distance='l1', input='global', **distance_params):
    return SearchedTerm(Term(input, True, tuple(OpSpec.parse(o) for o in ops),
                             OpSpec(distance, tuple(distance_params.items())), 1.0))


def level_pairs(shapes=LEVEL_SHAPES, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g, dtype=dtype).requires_grad_(), torch.randn(s, generator=g, dtype=dtype))
            for s in shapes]


def per_level_loop(term, pairs):
    """What the searched loss computed before fusion: each pair through the whole cascade and the distance."""
    total = 0
    for s, t in pairs:
        total = total + term.distance(*cascade_pair(term.cascade, s, t))
    return total


def value_and_grads(fn, pairs, seed=1):
    torch.manual_seed(seed)   # the mask op's draws
    value = fn(pairs)
    grads = torch.autograd.grad(value, [s for s, _ in pairs], allow_unused=True)
    return value, grads


def assert_same(fused, looped, rtol=1e-9, atol=1e-12):
    (v1, g1), (v2, g2) = fused, looped
    assert torch.allclose(v1, v2, rtol=rtol, atol=atol), (v1.item(), v2.item())
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=rtol, atol=atol), (a - b).abs().max()


# kl after logsoftmax is rejected by the loss itself (kl takes the log on the student side)
FUSABLE_PAIRS = [(suffix, distance, params) for suffix in SUFFIX_OPS for distance, params in DISTANCE_SPECS
                 if not (distance == 'kl' and suffix.startswith('logsoftmax'))]


@pytest.mark.parametrize('suffix,distance,params', FUSABLE_PAIRS)
def test_fused_tail_equals_per_level_loop(suffix, distance, params):
    for prefix in ([], ['catt', 'scale_r2']):   # fully fused, and a per-level head before the fused tail
        term = searched_term(prefix + [suffix], distance, **params)
        assert term.fuse_levels and len(term._prefix) == len(prefix)
        pairs = level_pairs()
        assert_same(value_and_grads(term.part_value, pairs), value_and_grads(lambda p: per_level_loop(term, p), pairs))


def test_runs_split_where_pairs_do_not_concatenate():
    """A pair with other channels or without spatial dims (two-stage RoI logits) breaks the run; the value is the
    same, random draws in the same order."""
    term = searched_term(['mask', 'norm_C'], 'pearson')
    shapes = [(2, 6, 8, 8), (2, 6, 4, 4), (2, 3, 4, 4), (2, 3, 2, 2), (7, 4), (2, 6, 2, 2)]
    pairs = level_pairs(shapes)
    assert_same(value_and_grads(term.part_value, pairs), value_and_grads(lambda p: per_level_loop(term, p), pairs))


def test_float32_fusion_matches_up_to_rounding():
    term = searched_term(['mask', 'no', 'norm_C'], 'l1')
    pairs = level_pairs(dtype=torch.float32)
    assert_same(value_and_grads(term.part_value, pairs), value_and_grads(lambda p: per_level_loop(term, p), pairs),
                rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('ops,distance,params', [
    (['mask', 'mask', 'norm_C'], 'l1', {}),        # two random ops: fusing would reorder their draws
    (['no', 'no', 'norm_HW'], 'l1', {}),           # the tail mixes positions
    (['no', 'no', 'norm_C'], 'ssim', {}),          # the distance mixes positions
    (['no', 'no', 'norm_C'], 'kl', {'dim': 'HW'}),
])
def test_not_fused_when_it_would_change_the_loss(ops, distance, params):
    term = searched_term(ops, distance, **params)
    pairs = level_pairs([(2, 6, 8, 8), (2, 6, 4, 4)])
    if ops[-1] == 'norm_HW':
        assert term.fuse_levels and term._suffix == ()   # nothing position-wise after norm_HW: plain loop
    else:
        assert not term.fuse_levels
    assert_same(value_and_grads(term.part_value, pairs), value_and_grads(lambda p: per_level_loop(term, p), pairs))


def test_published_faster_rcnn_terms_fuse_their_tails():
    """global: catt -> scale_r2 per level, norm_N + l1 fused; fg_bg: all fused; logits: softmax_C + pearson."""
    global_term = searched_term(['catt', 'scale_r2', 'norm_N'], 'l1')
    assert [type(o).__name__ for o in global_term._prefix] == ['ChannelAttention', 'ScaleR2']
    assert global_term.fuse_levels and len(global_term._suffix) == 1
    fg_bg = searched_term(['mask', 'no', 'norm_C'], 'l1', input='fg_bg')
    assert fg_bg.fuse_levels and fg_bg._prefix == ()
    logits = searched_term(['softmax_C'], 'pearson', input='logits')
    assert logits.fuse_levels and logits._prefix == ()


def _fg_bg_context(seed=0):
    g = torch.Generator().manual_seed(seed)
    samples = []
    for boxes in ([[4.0, 6.0, 40.0, 30.0], [20.0, 20.0, 60.0, 62.0]], [[0.0, 0.0, 10.0, 12.0]]):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), batch_input_shape=(64, 64)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes), labels=torch.zeros(len(boxes)).long())
        samples.append(sample)
    student = tuple(torch.randn(2, 8, 64 // s, 64 // s, generator=g).requires_grad_() for s in (4, 8, 16, 32))
    teacher = tuple(torch.randn(2, 8, 64 // s, 64 // s, generator=g) for s in (4, 8, 16, 32))
    return DistillContext(inputs=torch.zeros(2, 3, 64, 64), data_samples=samples, student=None, teacher=None,
                          student_feats=student, raw_student_feats=student, teacher_feats=teacher,
                          teacher_inputs=torch.zeros(2, 3, 64, 64))


@pytest.mark.parametrize('ops', [['mask', 'no', 'norm_C'], ['catt', 'scale_r2', 'norm_C'], ['satt', 'mask', 'pow2']])
def test_fg_bg_term_fused_equals_unfused_on_a_step(ops):
    """The whole fg/bg term (GT masks applied before the cascade, the shared random mask, both parts sharing one
    concatenation of the maps) with and without fusion, with and without a per-map head of the cascade."""
    fused = searched_term(ops, 'l1', input='fg_bg')
    looped = searched_term(ops, 'l1', input='fg_bg')
    looped.fuse_levels = False
    results = []
    for term in (fused, looped):
        ctx = _fg_bg_context()
        torch.manual_seed(3)
        losses = term(ctx, family=None)
        grads = torch.autograd.grad(losses['loss_fg'] + 2 * losses['loss_bg'], ctx.student_feats)
        results.append((losses, grads))
    (l1, g1), (l2, g2) = results
    assert set(l1) == {'loss_fg', 'loss_bg'}
    for key in l1:
        assert torch.allclose(l1[key], l2[key], rtol=1e-5, atol=1e-8)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)


POSITIONWISE_OPS = sorted(name for name in TRANSFORMS.module_dict if TRANSFORMS.build(dict(type=name)).positionwise)


def test_positionwise_ops_are_the_expected_ones():
    assert set(POSITIONWISE_OPS) >= set(SUFFIX_OPS) and 'ssim' not in POSITIONWISE_OPS
    assert not {'satt', 'catt', 'local_s2', 'norm_HW', 'softmax_HW', 'batchnorm'} & set(POSITIONWISE_OPS)


@pytest.mark.parametrize('name', POSITIONWISE_OPS)
def test_positionwise_flag_is_true(name):
    """An op flagged position-wise gives on concatenated flattened maps what it gives on each map (mask: one
    draw per map, in order)."""
    op = TRANSFORMS.build(dict(type=name))
    pairs = level_pairs([(3, 5, 4, 4), (3, 5, 2, 3), (3, 5, 1, 1)])
    torch.manual_seed(0)
    separate = [op.forward_pair(s, t) for s, t in pairs]
    torch.manual_seed(0)
    fused_s, fused_t = op.forward_fused(torch.cat([s.flatten(2) for s, _ in pairs], 2),
                                        torch.cat([t.flatten(2) for _, t in pairs], 2), [4 * 4, 2 * 3, 1])
    assert torch.allclose(fused_s, torch.cat([s.flatten(2) for s, _ in separate], 2))
    assert torch.allclose(fused_t, torch.cat([t.flatten(2) for _, t in separate], 2))


@pytest.mark.parametrize('name', sorted(DISTANCES.module_dict))
def test_positionwise_distances_are_means_of_elementwise(name):
    distance = DISTANCES.build(dict(type=name))
    if not distance.positionwise:
        with pytest.raises(NotImplementedError):
            distance.elementwise(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
        return
    s, t = torch.randn(2, 3, 10, dtype=torch.float64), torch.randn(2, 3, 10, dtype=torch.float64)
    values = distance.elementwise(s, t)
    assert values.shape[-1] == 10   # positions along the last dim
    assert torch.allclose(values.mean(), distance(s, t))


def test_cosine_similarity_matches_torch():
    a = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    mine, ref = cosine_similarity(a, b, dim=1), F.cosine_similarity(a, b, dim=1, eps=1e-8)
    assert torch.allclose(mine, ref, rtol=1e-12)
    weights = torch.randn_like(ref)
    assert torch.allclose(torch.autograd.grad((mine * weights).sum(), a)[0],
                          torch.autograd.grad((ref * weights).sum(), a)[0], rtol=1e-10)


def test_cosine_similarity_of_zero_vectors_is_zero_with_finite_gradient():
    a = torch.zeros(2, 3, 4, requires_grad=True)
    b = torch.randn(2, 3, 4)
    value = cosine_similarity(a, b, dim=1)
    assert torch.equal(value, torch.zeros(2, 4))
    grad, = torch.autograd.grad(value.sum(), a)
    assert torch.isfinite(grad).all()
    assert torch.allclose(value, F.cosine_similarity(a, b, dim=1, eps=1e-8))


@pytest.mark.parametrize('small, other', [(1e-11, 1e-7), (0.0, 1e-6), (0.0, 0.0)])
def test_cosine_similarity_of_near_zero_float32_vectors_has_finite_gradients(small, other):
    # both sides near zero in float32 (a near-constant class map centred by `pearson`): on the product of the two
    # clamped squared norms (down to 1e-32) rsqrt's derivative overflowed to inf and the clamp made it NaN,
    # which corrupted a whole student in one optimiser step (the DetKDS Faster R-CNN genome's logits term)
    a = torch.full((2, 3, 4), small, requires_grad=True)
    b = torch.full((2, 3, 4), other, requires_grad=True)
    grad_a, grad_b = torch.autograd.grad(cosine_similarity(a, b, dim=1).sum(), (a, b))
    assert torch.isfinite(grad_a).all() and torch.isfinite(grad_b).all()
