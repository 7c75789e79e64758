"""Global-Knowledge: pooling, the matching pursuit, robust weights, the point mask and the level loss."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

import distill_core
from distill_core.methods.global_kd import GlobalKDLoss, point_mask, robust_weights
from distill_core.methods.prototypes import box_mean_pool, select_prototypes

distill_core.register_all_modules()   # the losses, hooks and ops the configs name


def test_box_mean_pool_matches_crops():
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 6, 7)
    boxes = [(0, 1, 2, 4, 5), (1, 0, 0, 0, 0), (1, 3, 5, 9, 9), (0, 2, 6, 1, 3)]   # b, r0, c0, r1, c1
    b, r0, c0, r1, c1 = (torch.tensor(v) for v in zip(*boxes))
    pooled = box_mean_pool(feat, b, r0, r1, c0, c1)
    expected = [feat[0, :, 1:5, 2:6].mean((1, 2)), feat[1, :, 0:1, 0:1].mean((1, 2)),
                feat[1, :, 3:6, 5:7].mean((1, 2)),        # clipped to the map
                feat[0, :, 2:3, 6:7].mean((1, 2))]        # reversed range -> at least one cell
    assert torch.allclose(pooled, torch.stack(expected), atol=1e-6)


def _brute_force_pursuit(x_s, x_t, k, alpha=10.0, sigma=0.1, quantile=0.4):
    """The reference's loop written literally: explicit Frobenius norms for every candidate."""
    u_s, u_t = F.normalize(x_s.double(), dim=1), F.normalize(x_t.double(), dim=1)
    n = len(u_s)
    def density(u):
        return torch.exp(-((1 - u @ u.t()) / sigma) ** 2).sum(1)
    d_s, d_t = density(u_s), density(u_t)
    thr_s, thr_t = sorted(d_s.tolist())[int(quantile * n)], sorted(d_t.tolist())[int(quantile * n)]
    cands = [i for i in range(n) if d_s[i] > thr_s and d_t[i] > thr_t] or list(range(n))
    r_s, r_t = u_s.t().clone(), u_t.t().clone()
    chosen = []
    for _ in range(k):
        best = None
        for i in cands:
            a, b = r_s.t() @ u_s[i], r_t.t() @ u_t[i]
            w_s = (alpha * (a + b) + a) / (1 + 2 * alpha)
            w_t = (alpha * (a + b) + b) / (1 + 2 * alpha)
            err = (torch.outer(u_s[i], w_s) - r_s).pow(2).sum() + (torch.outer(u_t[i], w_t) - r_t).pow(2).sum() \
                + alpha * (w_s - w_t).pow(2).sum()
            if best is None or err < best[0] - 1e-12:
                best = (err, i, w_s, w_t)
        _, i, w_s, w_t = best
        chosen.append(i)
        r_s = r_s - torch.outer(u_s[i], w_s)
        r_t = r_t - torch.outer(u_t[i], w_t)
    return chosen


def test_matching_pursuit_known_answer():
    # three copies of e1 and two of e2 (teacher space: scaled copies). With a huge sigma every density is
    # equal, so no instance passes the strict density threshold and all are candidates. Pick 1: e1 leaves
    # a residual of 5 - 3 = 2 per space (e2: 3), so index 0. Pick 2: e1 explains nothing (error 2 + 2), e2
    # explains everything left (0), so index 3. Pick 3: all residuals are 0, ties go to the first candidate.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert select_prototypes(x, 3 * x, num_prototypes=3, sigma=1e6).tolist() == [0, 3, 0]
    # with the default density filter an isolated instance is never a candidate
    outlier = torch.tensor([[0.5, -1.0]])
    x = torch.cat([x, outlier, x + 0.01])
    chosen = select_prototypes(x, x, num_prototypes=4)
    assert 5 not in chosen.tolist()
    assert chosen.tolist() == _brute_force_pursuit(x, x, 4)


def test_matching_pursuit_equals_literal_loop_on_random_data():
    torch.manual_seed(0)
    base = torch.randn(4, 8)
    x_s = base[torch.randint(0, 4, (30,))] + 0.1 * torch.randn(30, 8)
    x_t = torch.cat([x_s, x_s], 1) + 0.1 * torch.randn(30, 16)      # another space, other width
    assert select_prototypes(x_s, x_t, num_prototypes=5).tolist() == _brute_force_pursuit(x_s, x_t, 5)


def test_robust_weights_hand_values_and_detached():
    protos_s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])            # 1 class x 2 prototypes x 2 channels
    protos_t = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    f_s = torch.tensor([[2.0, 0.0], [1.0, 1.0]], requires_grad=True)
    f_t = torch.tensor([[0.0, 3.0], [1.0, 1.0]], requires_grad=True)
    w = robust_weights(f_s, f_t, torch.tensor([0, 0]), protos_s, protos_t, torch.tensor([True]))
    # box 0: q_s = 1 (proto 0); q_t = max(0, 0.8) = 0.8 -> 0.8. box 1: q_s = 1/sqrt2; q_t = 1.4/sqrt2
    assert torch.allclose(w, torch.tensor([0.8, 1 - 0.4 / 2 ** 0.5]), atol=1e-6)
    assert not w.requires_grad
    missing = robust_weights(f_s, f_t, torch.tensor([0, 0]), protos_s, protos_t, torch.tensor([False]))
    assert torch.equal(missing, torch.ones(2))


def _reference_point_mask(boxes, batch_idx, weights, n, h, w, s):
    mask = torch.zeros(n, h, w)
    for (x1, y1, x2, y2), b, wb in zip(boxes.tolist(), batch_idx.tolist(), weights.tolist()):
        lx, rx, ly, ry = int(x1 / s), min(int(x2 / s), w), int(y1 / s), min(int(y2 / s), h)
        if lx == rx or ly == ry:
            mask[b, ly, lx] = max(mask[b, ly, lx].item(), wb)
        else:
            mask[b, ly:ry, lx:rx] = wb
    return mask.unsqueeze(1)


def test_point_mask_overwrite_and_point_rules():
    boxes = torch.tensor([[0, 0, 32, 32], [8, 8, 24, 40], [10, 10, 12, 12], [9, 9, 13, 30],
                          [0, 0, 16, 16], [40, 40, 63, 63], [17, 17, 19, 19], [0, 0, 64, 64]], dtype=torch.float)
    batch_idx = torch.tensor([0, 0, 0, 0, 1, 1, 1, 0])
    weights = torch.tensor([0.9, 0.3, 0.7, 0.5, 0.6, 0.8, 0.95, 0.2])
    got = point_mask(boxes, batch_idx, weights, 2, 8, 8, 8.0)
    assert torch.allclose(got, _reference_point_mask(boxes, batch_idx, weights, 2, 8, 8, 8.0))
    torch.manual_seed(0)
    xy = torch.rand(40, 2) * 60
    wh = torch.rand(40, 2) * 30
    boxes = torch.cat([xy, (xy + wh).clamp(max=64)], 1)
    batch_idx, weights = torch.randint(0, 3, (40,)), torch.rand(40)
    assert torch.allclose(point_mask(boxes, batch_idx, weights, 3, 8, 8, 8.0),
                          _reference_point_mask(boxes, batch_idx, weights, 3, 8, 8, 8.0))


def _sample(boxes, labels, shape=(64, 64)):
    sample = DetDataSample(metainfo=dict(img_shape=shape, batch_input_shape=shape))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float),
                                       labels=torch.tensor(labels))
    return sample


def test_level_loss_hand_formula_without_prototypes():
    torch.manual_seed(0)
    loss = GlobalKDLoss(3, 3, num_classes=2, kd_boxes='gt', canonical_scale=16, num_levels=2, split_terms=True)
    with torch.no_grad():   # identity adaptation conv for a hand check
        loss.adapt.weight.zero_()
        loss.adapt.bias.zero_()
        for i in range(3):
            loss.adapt.weight[i, i, 1, 1] = 1
    s, t = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    # box 0: sqrt(17*17)/16 -> level 0 (covers cells 0..1 with stride 8); box 1: 49/16 -> level 1
    samples = [_sample([[0, 0, 16, 16], [0, 0, 48, 48]], [0, 1])]
    with pytest.raises(ValueError, match='level'):
        loss(s, t, samples)
    terms = loss(s, t, samples, level=0)
    fg = torch.zeros(1, 1, 8, 8)
    fg[..., 0:2, 0:2] = 1
    sq = (s - t) ** 2
    assert terms['loss_fg'].item() == pytest.approx((sq * fg).sum().item() / (2 * 3 * 4) / 2, rel=1e-5)
    assert terms['loss_bg'].item() == pytest.approx(4 * (sq * (1 - fg)).sum().item() / (2 * 3 * 60) / 2, rel=1e-5)
    loss.set_attenuation(0.25)
    assert loss(s, t, samples, level=0)['loss_fg'].item() == pytest.approx(0.25 * terms['loss_fg'].item())


def test_level_loss_uses_detached_robust_weights_and_trains_adaptation():
    torch.manual_seed(0)
    loss = GlobalKDLoss(4, 4, num_classes=1, num_prototypes=2, kd_boxes='gt', canonical_scale=1000)
    protos_s, protos_t = [torch.randn(1, 2, 4)], [torch.randn(1, 2, 4)]
    loss.receive_prototypes(0, protos_s, protos_t, torch.tensor([True]))
    assert torch.equal(loss.proto_student, protos_s[0])
    s = torch.randn(2, 4, 8, 8, requires_grad=True)
    t = torch.randn(2, 4, 8, 8)
    samples = [_sample([[0, 0, 30, 30]], [0]), _sample([[10, 20, 50, 60]], [0])]
    value = loss(s, t, samples, level=0)
    value.backward()
    assert loss.adapt.weight.grad.abs().sum() > 0 and s.grad.abs().sum() > 0
    # the robust weight of a box equals 1 - |q_s - q_t| computed from the raw pooled features
    a = torch.tensor([[0, 0, 30, 30]]).float() / 8
    f_s = box_mean_pool(s.detach(), torch.tensor([0]), a[:, 1].long(), a[:, 3].long(), a[:, 0].long(), a[:, 2].long())
    f_t = box_mean_pool(t, torch.tensor([0]), a[:, 1].long(), a[:, 3].long(), a[:, 0].long(), a[:, 2].long())
    q_s = F.cosine_similarity(f_s, protos_s[0][0], dim=1).max()
    q_t = F.cosine_similarity(f_t, protos_t[0][0], dim=1).max()
    mask = point_mask(torch.tensor([[0., 0, 30, 30]]), torch.tensor([0]),
                      robust_weights(f_s, f_t, torch.tensor([0]), protos_s[0], protos_t[0], torch.tensor([True])),
                      2, 8, 8, 8.0)
    assert mask.max().item() == pytest.approx(1 - abs(q_s.item() - q_t.item()), rel=1e-5)
