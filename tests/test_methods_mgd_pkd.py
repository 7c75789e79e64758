"""MGD with a fixed mask and its random mask; PKD's per-channel normalisation against hand values."""
import pytest
import torch

import distill_core
from distill_core.methods.mgd import MGDLoss, random_spatial_mask
from distill_core.methods.pkd import PKDLoss, channel_standardise

distill_core.register_all_modules()   # the losses, hooks and ops the configs name


def _identity_generation(loss, c):
    """Make the generation block relu(x) (centre-tap identity convs, zero bias) for hand computation."""
    with torch.no_grad():
        for conv in (loss.generation[0], loss.generation[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            for i in range(c):
                conv.weight[i, i, 1, 1] = 1.0


def test_mgd_fixed_mask_hand_computed():
    loss = MGDLoss(2, 2, alpha_mgd=0.5, lambda_mgd=0.65)
    _identity_generation(loss, 2)
    s = torch.tensor([[[[1.0, -2.0]], [[3.0, 4.0]]]])       # 1 x 2 x 1 x 2
    t = torch.tensor([[[[0.0, 1.0]], [[1.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 0.0]]]])                    # keep the first position only (all channels)
    # generated = relu(s * mask) = [[1, 0], [3, 0]]; (g - t)^2 = 1 + 1 + 4 + 1 = 7; * alpha / N
    assert loss(s, t, mask=mask).item() == pytest.approx(0.5 * 7)


def test_mgd_random_mask_is_spatial_seeded_and_has_the_right_rate():
    torch.manual_seed(0)
    mask = random_spatial_mask(4, 64, 64, 0.65, 'cpu')
    assert mask.shape == (4, 1, 64, 64)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs((mask == 0).float().mean().item() - 0.65) < 0.02
    loss = MGDLoss(3, 3)
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    torch.manual_seed(5)
    first = loss(s, t)
    torch.manual_seed(5)
    explicit = loss(s, t, mask=torch.where(torch.rand(2, 1, 8, 8) > 1 - 0.65, 0.0, 1.0))
    assert first.item() == explicit.item()      # the mask comes from the CPU generator, as the reference


def test_mgd_alignment_and_training_decrease():
    torch.manual_seed(3)
    loss = MGDLoss(student_channels=3, teacher_channels=5, alpha_mgd=1.0, lambda_mgd=0.5)
    assert loss.align is not None
    s, t = torch.randn(2, 3, 6, 6), torch.randn(2, 5, 6, 6)
    opt = torch.optim.Adam(loss.parameters(), lr=0.01)
    mask = random_spatial_mask(2, 6, 6, 0.5, 'cpu')
    values = []
    for _ in range(40):
        opt.zero_grad()
        value = loss(s, t, mask=mask)
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[-1] < 0.5 * values[0]


def test_pkd_normalisation_unbiased_std():
    feat = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0]).view(1, 2, 1, 3)
    norm = channel_standardise(feat)
    # channel 0: mean 2, unbiased std 1; channel 1: mean 20, std 10 (statistics over N*H*W)
    assert torch.allclose(norm[0, 0, 0], torch.tensor([-1.0, 0.0, 1.0]) / (1 + 1e-6))
    assert torch.allclose(norm[0, 1, 0], torch.tensor([-10.0, 0.0, 10.0]) / (10 + 1e-6))
    # statistics pooled over the batch too
    pooled = channel_standardise(torch.tensor([1.0, 3.0]).view(2, 1, 1, 1))
    assert torch.allclose(pooled.flatten(), torch.tensor([-1.0, 1.0]) / (2 ** 0.5 + 1e-6))


def test_pkd_loss_values():
    s = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 3)
    loss = PKDLoss(loss_weight=3.0)
    assert loss(s, 2 * s + 5).item() == pytest.approx(0.0, abs=1e-9)     # same correlation -> 0
    # reversed: normalised maps -1,0,1 vs 1,0,-1 -> mse 8/3, /2, * weight
    expected = 3.0 * (8 / 3) / 2 / (1 + 1e-6) ** 2
    assert loss(s, s.flip(-1)).item() == pytest.approx(expected, rel=1e-6)
    # about (M-1)/M * (1 - r) per channel for random data
    torch.manual_seed(0)
    a, b = torch.randn(2, 1, 5, 5), torch.randn(2, 1, 5, 5)
    r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
    assert PKDLoss()(a, b).item() == pytest.approx((49 / 50) * (1 - r), rel=1e-4)


def test_pkd_resize_levels_and_channel_check():
    torch.manual_seed(0)
    s, t = torch.randn(1, 2, 4, 4, requires_grad=True), torch.randn(1, 2, 8, 8)
    value = PKDLoss(resize_stu=True)(s, t)
    value.backward()
    assert s.grad.abs().sum() > 0
    assert torch.isfinite(PKDLoss(resize_stu=False)(s, t))
    levels = PKDLoss()((s, s), (t, t))                       # sequences of levels are summed
    assert levels.item() == pytest.approx(2 * value.item(), rel=1e-6)
    with pytest.raises(ValueError, match='channel'):
        PKDLoss()(torch.randn(1, 3, 4, 4), torch.randn(1, 2, 4, 4))
