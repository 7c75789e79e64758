"""RoIAlign with ``mmcv.ops.roi_align``'s semantics ('avg' mode): mmcv's kernel off the CPU and for a few RoIs,
a vectorised equivalent otherwise.

mmcv's CPU kernel walks every RoI, bin, sampling point and channel in scalar code, and its backward likewise:
on the demo's batch-8 maps that was most of the Faster R-CNN instance term (~6 ms for 16 RoIs on a 32 x 32 map,
teacher forward and student forward + backward: benchmarks/roi_align.py).
Here each output bin is a weighted sum of C-vectors of the map: for all RoIs at once, the bins' sampling points,
their bilinear neighbours and weights are computed per axis as mmcv does (points beyond one cell outside the
map count zero, coordinates clamp at the border, the average over the bin's grid), and
``F.embedding_bag(mode='sum', per_sample_weights=...)`` sums the neighbours' rows of a channels-last copy of
the map; the backward scatters the output gradient back with ``index_add_``. Values and gradients equal mmcv's to
float rounding (tests/test_roi_align.py, boundary and degenerate RoIs included); ``benchmarks/roi_align.py`` times
both.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.ops import roi_align as mmcv_roi_align
from torch import Tensor


# mmcv's kernel costs per RoI, the vectorised one mostly per map (transposes, sampling tables): it pays from
# max(MIN_ROIS, N*H*W / POSITIONS_PER_ROI) RoIs on (fwd + bwd at the demo's batch-8 64-channel maps, 8 x 8 to
# 32 x 32: benchmarks/roi_align.py)
MIN_ROIS, POSITIONS_PER_ROI = 4, 512


def vectorised_pays(num_rois: int, shape: Sequence[int]) -> bool:
    n, _, h, w = shape
    return num_rois >= max(MIN_ROIS, n * h * w / POSITIONS_PER_ROI)


class RoIAlign:
    """``mmcv.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, 'avg', aligned)`` for one
    set of RoIs (K x 5: batch index, x1, y1, x2, y2 in input pixels). ``__call__(features)`` -> K x C x h x w;
    the vectorised path's sampling tables are kept per map size and dtype, so maps of one size (the student's and
    the teacher's) share them. ``implementation``: 'auto' (vectorised on CPU where ``vectorised_pays``, else
    mmcv's kernel), or either one always."""

    IMPLEMENTATIONS = ('auto', 'vectorised', 'mmcv')

    def __init__(self, rois: Tensor, output_size: Union[int, Tuple[int, int]], spatial_scale: float,
                 sampling_ratio: int = 0, aligned: bool = True, implementation: str = 'auto'):
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(f'RoIAlign implementation must be one of {self.IMPLEMENTATIONS}, got {implementation!r}')
        self.rois, self.implementation = rois, implementation
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.spatial_scale, self.sampling_ratio, self.aligned = float(spatial_scale), int(sampling_ratio), aligned
        self._tables = {}   # (N, H, W, dtype) -> (index, weight)

    def __call__(self, features: Tensor) -> Tensor:
        if self.implementation == 'mmcv' or features.dim() != 4 or (self.implementation == 'auto' and (
                features.device.type != 'cpu' or not vectorised_pays(self.rois.shape[0], features.shape))):
            return mmcv_roi_align(features, self.rois.to(features.dtype), self.output_size, self.spatial_scale,
                                  self.sampling_ratio, 'avg', self.aligned)
        n, c, h, w = features.shape
        if self.rois.shape[0] == 0:
            return features.new_zeros((0, c, *self.output_size))
        key = (n, h, w, features.dtype)
        if key not in self._tables:
            self._tables[key] = _bin_neighbours(self.rois.to(features.dtype), features.shape, self.output_size,
                                                self.spatial_scale, self.sampling_ratio, bool(self.aligned))
        bins = _SumOfRows.apply(features, *self._tables[key])   # (K * h * w) x C
        (h, w), k = self.output_size, self.rois.shape[0]
        return bins.view(k, h, w, -1).permute(0, 3, 1, 2).contiguous()


def _axis(start: Tensor, length: Tensor, grid: Tensor, bins: int, size: int) -> Tuple[Tensor, Tensor]:
    """Along one axis, for every RoI (K), bin and sampling point (padded to the largest grid, G): the two
    bilinear neighbours (K x bins x 2G indices) and their weights, 1/grid included (mmcv's rule per axis)."""
    dtype = start.dtype
    points = max(int(grid.max()), 1) if grid.numel() else 1
    bin_size = (length / bins).view(-1, 1, 1)
    grid_ = grid.clamp(min=1).to(dtype).view(-1, 1, 1)
    b = torch.arange(bins, dtype=dtype, device=start.device).view(1, -1, 1)
    i = torch.arange(points, dtype=dtype, device=start.device).view(1, 1, -1)
    coord = start.view(-1, 1, 1) + b * bin_size + (i + 0.5) * bin_size / grid_
    inside = (coord >= -1.0) & (coord <= size) & (i < grid.view(-1, 1, 1))
    coord = coord.clamp(min=0)
    low = coord.floor()
    at_edge = low >= size - 1
    low = low.clamp(max=size - 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low)
    scale = inside.to(dtype) / grid_
    low = low.long()
    high = torch.where(at_edge, low, low + 1)
    return torch.cat([low, high], -1), torch.cat([(1 - frac) * scale, frac * scale], -1)


def _bin_neighbours(rois: Tensor, shape: torch.Size, output_size: Tuple[int, int], spatial_scale: float,
                    sampling_ratio: int, aligned: bool) -> Tuple[Tensor, Tensor]:
    """Per output bin (K*h*w rows), the rows of the channels-last map (``y*W*N + x*N + n``, see
    ``_SumOfRows``) its sampling points interpolate from, and their weights (zero for padding)."""
    n, _, height, width = shape
    k = rois.shape[0]
    h, w = output_size
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)).unbind(1)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:   # mmcv: non-aligned RoIs are at least one cell wide
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((k,), sampling_ratio, dtype=torch.long, device=rois.device)
    else:   # adaptive: ceil(bin size) points per bin and axis
        grid_h, grid_w = torch.ceil(roi_h / h).long(), torch.ceil(roi_w / w).long()
    ys, wys = _axis(y1, roi_h, grid_h, h, height)   # K x h x 2Gy
    xs, wxs = _axis(x1, roi_w, grid_w, w, width)    # K x w x 2Gx
    image = rois[:, 0].long().view(k, 1, 1, 1, 1)
    index = (ys.view(k, h, 1, -1, 1) * width + xs.view(k, 1, w, 1, -1)) * n + image
    weight = wys.view(k, h, 1, -1, 1) * wxs.view(k, 1, w, 1, -1)
    return index.view(k * h * w, -1), weight.view(k * h * w, -1)


class _SumOfRows(torch.autograd.Function):
    """``out[b] = sum_j weight[b, j] * rows[index[b, j]]`` over the map's channels-last rows (N*H*W x C)."""

    @staticmethod
    def forward(ctx, features: Tensor, index: Tensor, weight: Tensor) -> Tensor:
        n, c, h, w = features.shape
        # (N*C) x (H*W) -> (H*W) x (N*C) is a plain 2-D transpose, which torch copies blockwise (its CPU copy of
        # the 4-D permute to N x H x W x C goes element by element); row (y*W + x)*N + n then holds image n's
        # C-vector
        rows = features.reshape(n * c, h * w).t().contiguous().view(h * w * n, c)
        ctx.save_for_backward(index, weight)
        ctx.shape = features.shape
        return F.embedding_bag(index, rows, mode='sum', per_sample_weights=weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, weight = ctx.saved_tensors
        n, c, h, w = ctx.shape
        rows = grad.new_zeros(h * w * n, c)
        rows.index_add_(0, index.flatten(), (weight.unsqueeze(-1) * grad.unsqueeze(1)).flatten(0, 1))
        # back through the 2-D transpose; contiguous first: as a strided view the gradient would be copied by a slow
        # 4-D kernel wherever it is used next
        return rows.view(h * w, n * c).t().contiguous().view(n, c, h, w), None, None
