"""FGD: attention, masks, the four terms against hand-computed values, alignment and gradients."""
import math

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

import distill_core
from distill_core.methods.fgd import FGDLoss, channel_attention, spatial_attention

distill_core.register_all_modules()   # the losses, hooks and ops the configs name


def _sample(boxes, img_shape):
    sample = DetDataSample(metainfo=dict(img_shape=img_shape, batch_input_shape=img_shape))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                                       labels=torch.zeros(len(boxes), dtype=torch.long))
    return sample


def test_attention_hand_computed():
    # C=2, H=1, W=2: |F| means over channels are (1, 2); over positions (2, 1)
    feat = torch.tensor([[[[1.0, 3.0]], [[-1.0, 1.0]]]])
    sp = spatial_attention(feat, temp=0.5)
    e2 = math.exp(2.0)
    assert sp.shape == (1, 1, 1, 2)
    assert torch.allclose(sp.flatten(), torch.tensor([2 / (1 + e2), 2 * e2 / (1 + e2)]))
    ch = channel_attention(feat, temp=0.5)
    assert ch.shape == (1, 2, 1, 1)
    assert torch.allclose(ch.flatten(), torch.tensor([2 * e2 / (1 + e2), 2 / (1 + e2)]))


def test_loss_matches_weighted_formula_with_hand_mask():
    torch.manual_seed(0)
    n, c, h, w = 2, 4, 4, 4
    s, t = torch.randn(n, c, h, w), torch.randn(n, c, h, w)
    # 32x32 image on a 4x4 map: box (0,0,8,8) -> cells 0..1 x 0..1 (inclusive, ceil(1)=1) -> 1/4 each;
    # box (20,20,28,28) -> x' 2.5..3.5 -> floor 2, ceil 4 (clipped to 3): area counts 3x3 -> 1/9
    samples = [_sample([[0, 0, 8, 8]], (32, 32)), _sample([[20, 20, 28, 28]], (32, 32))]
    fg = torch.zeros(n, 1, h, w)
    fg[0, 0, 0:2, 0:2] = 0.25
    fg[1, 0, 2:4, 2:4] = 1 / 9
    bg = (fg == 0).float()
    bg = bg / bg.sum(dim=(2, 3), keepdim=True)
    loss = FGDLoss(c, c, temp=0.5, alpha_fgd=2.0, beta_fgd=3.0, gamma_fgd=5.0, lambda_fgd=7.0, split_terms=True)
    terms = loss(s, t, samples)
    sp_t, ch_t = spatial_attention(t, 0.5), channel_attention(t, 0.5)
    sq = (s - t) ** 2
    assert terms['loss_fg'].item() == pytest.approx(2.0 * (sp_t * ch_t * fg * sq).sum().item() / n, rel=1e-5)
    assert terms['loss_bg'].item() == pytest.approx(3.0 * (sp_t * ch_t * bg * sq).sum().item() / n, rel=1e-5)
    att = ((channel_attention(s, 0.5) - ch_t).abs().sum() + (spatial_attention(s, 0.5) - sp_t).abs().sum()) / n
    assert terms['loss_att'].item() == pytest.approx(5.0 * att.item(), rel=1e-5)
    # zero-initialised last context conv: the relation term starts as a plain summed MSE / N
    assert terms['loss_rela'].item() == pytest.approx(7.0 * sq.sum().item() / n, rel=1e-5)
    # the summed form equals the parts, and explicit masks give the same as data_samples
    total = FGDLoss(c, c, alpha_fgd=2.0, beta_fgd=3.0, gamma_fgd=5.0, lambda_fgd=7.0)(s, t, masks=(fg, bg))
    assert total.item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-5)


def test_alignment_and_channel_checks():
    loss = FGDLoss(student_channels=3, teacher_channels=6)
    assert isinstance(loss.align, torch.nn.Conv2d)
    s, t = torch.randn(1, 3, 4, 4), torch.randn(1, 6, 4, 4)
    masks = (torch.ones(1, 1, 4, 4) / 16, torch.zeros(1, 1, 4, 4))
    assert torch.isfinite(loss(s, t, masks=masks))
    assert torch.isfinite(loss(torch.randn(1, 6, 4, 4), t, masks=masks))   # already adapted by the distiller
    with pytest.raises(ValueError, match='channels'):
        loss(torch.randn(1, 5, 4, 4), t, masks=masks)
    assert FGDLoss(8, 8).align is None


def test_gradients_reach_student_and_both_context_modules():
    torch.manual_seed(1)
    loss = FGDLoss(4, 4, lambda_fgd=1.0)
    s = torch.randn(2, 4, 5, 5, requires_grad=True)
    t = torch.randn(2, 4, 5, 5)
    samples = [_sample([[0, 0, 20, 20]], (40, 40)), _sample([[10, 10, 30, 40]], (40, 40))]
    loss(s, t, samples).backward()
    assert s.grad.abs().sum() > 0
    # teacher-side context block is trained (its zero-initialised last conv gets gradient)
    assert loss.context_t.channel_add[-1].weight.grad.abs().sum() > 0
    assert loss.context_s.channel_add[-1].weight.grad.abs().sum() > 0
    assert torch.count_nonzero(loss.context_t.channel_add[-1].weight) == 0   # init: zero


def test_imitation_decreases_loss():
    torch.manual_seed(2)
    t = torch.randn(2, 4, 6, 6)
    s = torch.randn(2, 4, 6, 6, requires_grad=True)
    samples = [_sample([[0, 0, 30, 30]], (48, 48)), _sample([[8, 16, 40, 40]], (48, 48))]
    loss = FGDLoss(4, 4, alpha_fgd=1.0, beta_fgd=1.0, gamma_fgd=1.0, lambda_fgd=0.1)
    opt = torch.optim.Adam([s] + list(loss.parameters()), lr=0.05)
    values = []
    for _ in range(60):
        opt.zero_grad()
        value = loss(s, t, samples)
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[-1] < 0.1 * values[0]
