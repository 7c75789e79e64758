"""Ground-truth foreground/background masks on a feature map (FGD's rule), built for a whole batch at once.

Shared by the searched fg/bg knowledge input, FGD and GKD. The rule (methods.md §2.3), per image:

* scale each GT box to the feature map by ``W / w_img`` and ``H / h_img`` (unpadded image size, padded map);
* ``w_min = floor(x1')``, ``w_max = ceil(x2')``, ``h_min = floor(y1')``, ``h_max = ceil(y2')``;
* the box covers the inclusive cells ``[h_min..h_max] x [w_min..w_max]`` (clipped to the map) with value
  ``1 / (h_max - h_min + 1) / (w_max - w_min + 1)`` (the area is computed before clipping);
* overlapping boxes take the element-wise max, so small boxes win;
* background = cells with zero foreground, normalised to sum to 1 per image (left at 0 if there is none).

The training-step version is vectorised over boxes and images (no Python loop); ``fg_bg_masks_per_box_loop``
is the plain per-box reference used only by tests and the benchmark.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor


def _box_cells(boxes: Tensor, img_h: Tensor, img_w: Tensor, H, W):
    """Integer cell ranges and fg value of boxes ``[..., 4]`` (xyxy, input pixels) on ``H x W`` maps
    (``H``, ``W`` numbers or tensors broadcasting against ``boxes[..., 0]``)."""
    boxes = boxes.float()
    # x / w_img * W (in this order, as the reference does) so that floor/ceil agree bit for bit
    w_min = torch.floor(boxes[..., 0] / img_w * W)
    h_min = torch.floor(boxes[..., 1] / img_h * H)
    w_max = torch.ceil(boxes[..., 2] / img_w * W)
    h_max = torch.ceil(boxes[..., 3] / img_h * H)
    # same operation order as the reference (1/dh/dw) so masks match bit for bit
    value = 1.0 / (h_max + 1 - h_min) / (w_max + 1 - w_min)
    return h_min, h_max, w_min, w_max, value


def _normalised_background(fg: Tensor) -> Tensor:
    bg = (fg == 0).to(fg.dtype)
    total = bg.sum(dim=(-2, -1), keepdim=True)
    return torch.where(total > 0, bg / total.clamp(min=1), bg)


def fg_bg_masks(gt_bboxes: Sequence[Tensor], img_shapes: Sequence[Tuple[int, int]],
                feat_hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """FGD foreground and background masks for a batch.

    Args:
        gt_bboxes: per image a ``K_i x 4`` tensor of xyxy boxes in input pixels (``K_i`` may be 0).
        img_shapes: per image the unpadded ``(h, w)`` (extra trailing entries such as channels are ignored).
        feat_hw: ``(H, W)`` of the (padded) feature map.

    Returns:
        ``(fg, bg)``, each ``N x 1 x H x W`` float32 on the boxes' device, without gradient.
    """
    return fg_bg_masks_levels(gt_bboxes, img_shapes, [feat_hw])[0]


def fg_bg_masks_levels(gt_bboxes: Sequence[Tensor], img_shapes: Sequence[Tuple[int, int]],
                       feat_hws: Sequence[Tuple[int, int]]) -> List[Tuple[Tensor, Tensor]]:
    """``fg_bg_masks`` for several map sizes (e.g. every FPN level) in one pass.

    Every (level, box) expands to the flat indices of the cells it covers (work proportional to the covered
    area, not to boxes x map size) in one buffer holding all levels, and a single ``scatter_reduce(amax)``
    applies the max-over-overlaps rule.
    """
    if len(gt_bboxes) != len(img_shapes):
        raise ValueError(f'{len(gt_bboxes)} box tensors but {len(img_shapes)} image shapes')
    n = len(gt_bboxes)
    device = gt_bboxes[0].device if n else torch.device('cpu')
    sizes = [(int(h), int(w)) for h, w in feat_hws]
    numels = [n * h * w for h, w in sizes]
    buffer = torch.zeros(sum(numels), device=device)
    with torch.no_grad():
        per_image = torch.tensor([int(b.shape[0]) for b in gt_bboxes], device=device, dtype=torch.long)
        if int(per_image.sum()) > 0 and sizes:
            boxes = torch.cat([b.detach().reshape(-1, 4).to(device=device, dtype=torch.float32)
                               for b in gt_bboxes])
            image = torch.repeat_interleave(torch.arange(n, device=device), per_image)
            shapes = torch.tensor([[float(s[0]), float(s[1])] for s in img_shapes], device=device)[image]
            hw = torch.tensor(sizes, device=device, dtype=torch.float32)              # L x 2
            H, W = hw[:, 0:1], hw[:, 1:2]                                             # L x 1, vs boxes 1 x B
            h_min, h_max, w_min, w_max, value = _box_cells(boxes[None], shapes[None, :, 0], shapes[None, :, 1],
                                                           H, W)
            Hl, Wl = H.long(), W.long()
            # covered cells: the inclusive rectangle clipped to the map (the value keeps the unclipped area)
            top, left = h_min.clamp(min=0).long(), w_min.clamp(min=0).long()
            rows = (torch.minimum(h_max.long(), Hl - 1) - top + 1).clamp(min=0)
            cols = (torch.minimum(w_max.long(), Wl - 1) - left + 1).clamp(min=0)
            cells = (rows * cols).flatten()
            level_start = torch.tensor([0] + numels[:-1], device=device).cumsum(0)[:, None]
            corner = level_start + (image[None] * Hl + top) * Wl + left              # L x B flat index
            # per covered cell, its (level, box)'s first cell, columns, map width and corner, in one gather
            first = torch.cumsum(cells, 0) - cells
            per_box = torch.stack([first, cols.flatten().clamp(min=1), Wl.expand_as(cols).flatten(),
                                   corner.flatten()], 1)
            per_cell = torch.repeat_interleave(per_box, cells, dim=0)
            offset = torch.arange(per_cell.shape[0], device=device) - per_cell[:, 0]
            # row = offset // cols, in float (exact: offsets stay far below 2^24) since int64 division is slow
            row = torch.floor((offset.float() + 0.5) / per_cell[:, 1].float()).long()
            flat = per_cell[:, 3] + row * per_cell[:, 2] + (offset - row * per_cell[:, 1])
            buffer.scatter_reduce_(0, flat, torch.repeat_interleave(value.flatten(), cells), reduce='amax',
                                   include_self=True)
        masks = []
        for fg, (h, w) in zip(torch.split(buffer, numels), sizes):
            fg = fg.view(n, 1, h, w)
            masks.append((fg, _normalised_background(fg)))
    return masks


def fg_bg_masks_per_box_loop(gt_bboxes: Sequence[Tensor], img_shapes: Sequence[Tuple[int, int]],
                             feat_hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Straightforward per-image, per-box loop of the same rule: the reference for tests and benchmarks."""
    H, W = int(feat_hw[0]), int(feat_hw[1])
    fgs, bgs = [], []
    for boxes, shape in zip(gt_bboxes, img_shapes):
        fg = torch.zeros(H, W, device=boxes.device)
        img_h = torch.tensor(float(shape[0]), device=boxes.device)
        img_w = torch.tensor(float(shape[1]), device=boxes.device)
        h_min, h_max, w_min, w_max, value = _box_cells(boxes.detach(), img_h, img_w, H, W)
        for j in range(boxes.shape[0]):
            r0, r1 = max(int(h_min[j]), 0), min(int(h_max[j]), H - 1)
            c0, c1 = max(int(w_min[j]), 0), min(int(w_max[j]), W - 1)
            if r0 > r1 or c0 > c1:
                continue
            fg[r0:r1 + 1, c0:c1 + 1] = torch.maximum(fg[r0:r1 + 1, c0:c1 + 1], value[j])
        fgs.append(fg)
        bgs.append(_normalised_background(fg))
    return torch.stack(fgs).unsqueeze(1), torch.stack(bgs).unsqueeze(1)
