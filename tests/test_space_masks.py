"""FGD ground-truth masks (methods.md §2.3): hand-computed example, and the vectorised builder equals the
per-box loop on random boxes."""
import torch

from distill_core.masks import fg_bg_masks, fg_bg_masks_levels, fg_bg_masks_per_box_loop


def test_hand_computed_masks():
    # 16 x 16 image, 4 x 4 map: coordinates scale by 1/4
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0],       # cells 0..1 x 0..1, value 1/(2*2)
                           [2.0, 2.0, 14.0, 6.0]])]    # x: 0.5..3.5 -> 0..4 (clipped to 3, area uses 5 cols);
    #                                                    y: 0.5..1.5 -> 0..2 -> value 1/(3*5)
    fg, bg = fg_bg_masks(boxes, [(16, 16)], (4, 4))
    expected = torch.zeros(4, 4)
    expected[0:3, 0:4] = 1 / 15
    expected[0:2, 0:2] = 0.25                           # overlaps take the max: the small box wins
    assert fg.shape == (1, 1, 4, 4)
    assert torch.allclose(fg[0, 0], expected)
    expected_bg = torch.zeros(4, 4)
    expected_bg[3] = 0.25                               # 4 background cells, normalised to sum 1
    assert torch.allclose(bg[0, 0], expected_bg)


def test_image_without_boxes_and_unpadded_shape():
    boxes = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 8.0, 8.0]])]
    # second image is 8 x 16 (h x w) inside a padded 4 x 4 map: y scales by 4/8, x by 4/16
    fg, bg = fg_bg_masks(boxes, [(16, 16), (8, 16, 3)], (4, 4))
    assert torch.equal(fg[0], torch.zeros(1, 4, 4))
    assert torch.allclose(bg[0], torch.full((1, 4, 4), 1 / 16))
    expected = torch.zeros(4, 4)
    expected[0:5, 0:3] = 1 / (5 * 3)                    # y 0..4 (5 rows, clipped), x 0..2 (3 cols)
    assert torch.allclose(fg[1, 0], expected)


def test_vectorised_equals_per_box_loop():
    g = torch.Generator().manual_seed(0)
    for k in (1, 5, 50, 200):
        boxes = []
        for count in (k, 0, k // 2 + 1):
            xy = torch.rand(count, 2, generator=g) * 110
            wh = torch.rand(count, 2, generator=g) * 60 + 0.5
            boxes.append(torch.cat([xy, xy + wh], 1))
        shapes = [(128, 128), (120, 100), (128, 96)]
        levels = ((32, 32), (8, 8), (3, 5))
        for hw, together in zip(levels, fg_bg_masks_levels(boxes, shapes, levels)):
            fast = fg_bg_masks(boxes, shapes, hw)
            slow = fg_bg_masks_per_box_loop(boxes, shapes, hw)
            assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
            assert torch.equal(together[0], slow[0]) and torch.equal(together[1], slow[1])
            assert torch.allclose(fast[1].sum(dim=(1, 2, 3))[fast[1].sum(dim=(1, 2, 3)) > 0], torch.tensor(1.0))
