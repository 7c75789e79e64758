"""distill_core.roi_align: the vectorised CPU RoIAlign gives mmcv's ``roi_align`` values and gradients
(aligned or not, fixed or adaptive sampling, RoIs over the border, outside the map, degenerate)."""
import pytest
import torch
from mmcv.ops import roi_align as mmcv_roi_align

from distill_core.roi_align import RoIAlign, vectorised_pays


def awkward_rois(n_images: int, size: float, generator: torch.Generator) -> torch.Tensor:
    """Random boxes plus the cases mmcv treats specially, in input pixels of a ``size`` x ``size`` image."""
    k = 24
    corner = (1.3 * size * torch.rand(k, 2, generator=generator)) - 0.15 * size
    extent = size * 0.6 * torch.rand(k, 2, generator=generator)
    random = torch.cat([corner, corner + extent], 1)
    special = torch.tensor([
        [0.0, 0.0, size, size],                        # the whole image
        [size - 1.0, size - 1.0, size + 40, size + 40],   # over the bottom-right border (clamped samples)
        [-50.0, -50.0, -20.0, -20.0],                  # wholly outside: zero
        [10.0, 12.0, 10.0, 12.0],                      # zero size
        [3.3, 4.1, 4.0, 4.6],                          # smaller than a cell
        [-6.0, 5.0, 30.0, size + 3.0],                 # across two borders
    ])
    boxes = torch.cat([random, special])
    images = torch.randint(0, n_images, (boxes.shape[0], 1), generator=generator).float()
    return torch.cat([images, boxes], 1)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 1, 2, 3])
@pytest.mark.parametrize('output_size,spatial_scale', [((7, 7), 0.25), ((2, 3), 0.125)])
def test_values_and_gradients_equal_mmcv(aligned, sampling_ratio, output_size, spatial_scale):
    generator = torch.Generator().manual_seed(sampling_ratio + 10 * aligned)
    features = torch.randn(3, 5, 13, 17, generator=generator)
    rois = awkward_rois(3, 17 / spatial_scale, generator)
    expected = mmcv_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, 'avg', aligned)
    ours = RoIAlign(rois, output_size, spatial_scale, sampling_ratio, aligned, implementation='vectorised')
    assert torch.allclose(ours(features), expected, atol=1e-5, rtol=1e-5)

    grad = torch.randn(expected.shape, generator=generator)
    reference_input, ours_input = features.clone().requires_grad_(), features.clone().requires_grad_()
    mmcv_roi_align(reference_input, rois, output_size, spatial_scale, sampling_ratio, 'avg', aligned).backward(grad)
    ours(ours_input).backward(grad)
    assert ours_input.grad.is_contiguous()
    assert torch.allclose(ours_input.grad, reference_input.grad, atol=1e-5, rtol=1e-5)
    assert reference_input.grad.abs().sum() > 0   # the comparison is not between two zero tensors


def test_double_precision_tables():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 4, 9, 11, generator=generator, dtype=torch.float64)
    rois = awkward_rois(2, 44.0, generator).double()
    expected = mmcv_roi_align(features, rois, (7, 7), 0.25, 0, 'avg', True)
    ours = RoIAlign(rois, (7, 7), 0.25, 0, True)(features)
    assert ours.dtype == torch.float64
    assert torch.allclose(ours, expected, atol=1e-12)


def test_no_rois():
    features = torch.randn(2, 4, 8, 8, requires_grad=True)
    out = RoIAlign(torch.zeros(0, 5), 7, 0.25, 2, implementation='vectorised')(features)
    assert out.shape == (0, 4, 7, 7)
    (out.sum() + features.sum() * 0).backward()
    assert torch.count_nonzero(features.grad) == 0


def test_tables_shared_per_map_size_and_both_paths_agree():
    generator = torch.Generator().manual_seed(5)
    rois = awkward_rois(2, 64.0, generator)
    student, teacher = torch.randn(2, 8, 16, 16), torch.randn(2, 8, 16, 16)
    align = RoIAlign(rois, 7, 0.25, 2, implementation='vectorised')
    align(student), align(teacher)
    assert len(align._tables) == 1          # one sampling table for both sides
    align(torch.randn(2, 8, 20, 16))
    assert len(align._tables) == 2          # another map size: its own table
    auto = RoIAlign(rois, 7, 0.25, 2)(student)
    assert torch.allclose(auto, RoIAlign(rois, 7, 0.25, 2, implementation='mmcv')(student), atol=1e-5)


def test_rule_and_bad_implementation():
    # mmcv's kernel for a few RoIs on a large map, the vectorised one for many (benchmarks/roi_align.py)
    assert not vectorised_pays(2, (8, 64, 32, 32)) and vectorised_pays(32, (8, 64, 32, 32))
    assert not vectorised_pays(3, (8, 64, 8, 8)) and vectorised_pays(4, (8, 64, 8, 8))
    with pytest.raises(ValueError, match='implementation'):
        RoIAlign(torch.zeros(0, 5), 7, 0.25, implementation='fast')
