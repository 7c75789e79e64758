"""Synthetic COCO-format detection data: bright rectangles, ellipses and triangles on noisy dark backgrounds.

The project cannot download COCO, so every demo, test and search trial trains on this data. It is built to
behave like a (very small) detection benchmark:

* objects in all three COCO size buckets. COCO's area thresholds (32^2, 96^2) are kept as they are, so
  ``CocoMetric``'s AP_s/AP_m/AP_l mean the usual thing: at 128 px most objects are small (side 8-30 px) or
  medium (34-72 px) and a few are large (side 98-124 px, at most one per image, drawn first so it sits behind);
* aspect ratios 0.5-2, random bright colours, textured backgrounds (noise, gradients, stripes);
* occlusion: later shapes are painted over earlier ones; a shape with less than 30% of its pixels still
  visible is dropped from the annotations (its visible fragment stays in the picture, as in real data);
* boxes are tight around the visible pixels of each shape, so they always lie inside the image.

``annotation.area`` is the box area ``w * h`` (not the pixel count): the size buckets then follow the boxes.

Generation is deterministic: the same arguments give byte-identical PNG and JSON files. Train and val draw
from independent random streams of the same seed. A dataset is written to a temporary folder next to
``out_dir`` and renamed into place, so a reader never sees a half-written dataset.
"""
from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .errors import DataError

CLASSES: Tuple[str, ...] = ('rectangle', 'ellipse', 'triangle')
SPLITS: Tuple[str, ...] = ('train', 'val')

MIN_VISIBLE_FRACTION = 0.3          # "more than ~70% hidden" -> not annotated
MAX_SHAPES_PER_IMAGE = 6
# (probability, min side, max side) of sqrt(w*h) per COCO size bucket, in pixels of a 128 px image;
# scaled linearly for other image sizes.
SIZE_BUCKETS = ((0.50, 8, 30), (0.42, 34, 72), (0.08, 98, 124))
REFERENCE_SIZE = 128


# ---------------------------------------------------------------------------------------------- drawing
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dark base colour + low-frequency gradient + faint stripes, float32 HxWx3 in 0..255."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(5, 50, size=3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy                       # -1.4..1.4 across the image
    gradient = ramp[..., None] * rng.uniform(-30, 30, size=3).astype(np.float32)
    stripe_angle = rng.uniform(0, np.pi)
    cycles = rng.uniform(2, 8)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * cycles * (np.cos(stripe_angle) * xx + np.sin(stripe_angle) * yy) + phase)
    stripes = wave[..., None] * rng.uniform(0, 18, size=3).astype(np.float32)
    return base + gradient + stripes + 20.0


def _bright_colour(rng: np.random.Generator) -> Tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.75, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _sample_box(rng: np.random.Generator, size: int, large: bool) -> Tuple[int, int, int, int]:
    """Return x0, y0, w, h of a shape box that lies fully inside the image."""
    scale = size / REFERENCE_SIZE
    if large:
        _, lo, hi = SIZE_BUCKETS[2]
        aspect_lo, aspect_hi = 0.75, 1.33        # keep large boxes large after clipping to the image
    else:
        probs = np.array([b[0] for b in SIZE_BUCKETS[:2]])
        _, lo, hi = SIZE_BUCKETS[int(rng.choice(2, p=probs / probs.sum()))]
        aspect_lo, aspect_hi = 0.5, 2.0
    side = rng.uniform(lo, hi) * scale
    aspect = np.exp(rng.uniform(np.log(aspect_lo), np.log(aspect_hi)))       # w / h
    w = int(np.clip(round(side * np.sqrt(aspect)), 4, size - 2))
    h = int(np.clip(round(side / np.sqrt(aspect)), 4, size - 2))
    x0 = int(rng.integers(0, size - w + 1))
    y0 = int(rng.integers(0, size - h + 1))
    return x0, y0, w, h


def _shape_mask(rng: np.random.Generator, label: int, box: Tuple[int, int, int, int], size: int) -> np.ndarray:
    """Rasterise one shape filling ``box`` into a boolean HxW mask."""
    x0, y0, w, h = box
    x1, y1 = x0 + w - 1, y0 + h - 1
    canvas = Image.new('L', (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    name = CLASSES[label]
    if name == 'rectangle':
        draw.rectangle([x0, y0, x1, y1], fill=255)
    elif name == 'ellipse':
        draw.ellipse([x0, y0, x1, y1], fill=255)
    else:
        # apex somewhere on one side of the box, base along the opposite side: the box stays tight
        t = rng.uniform(0, 1)
        side = int(rng.integers(4))
        if side == 0:
            pts = [(x0 + t * (x1 - x0), y0), (x0, y1), (x1, y1)]
        elif side == 1:
            pts = [(x0 + t * (x1 - x0), y1), (x0, y0), (x1, y0)]
        elif side == 2:
            pts = [(x0, y0 + t * (y1 - y0)), (x1, y0), (x1, y1)]
        else:
            pts = [(x1, y0 + t * (y1 - y0)), (x0, y0), (x0, y1)]
        draw.polygon(pts, fill=255)
    return np.asarray(canvas) > 0


def _render_image(rng: np.random.Generator, size: int, forced_label: int = -1):
    """Draw one image; return (uint8 HxWx3 array, list of (label, [x, y, w, h]))."""
    image = _background(rng, size)
    num_shapes = int(rng.integers(1, MAX_SHAPES_PER_IMAGE + 1))
    labels = rng.integers(0, len(CLASSES), size=num_shapes)
    if forced_label >= 0:
        labels[-1] = forced_label      # the last shape is never occluded, so this class is annotated
    large_index = 0 if rng.uniform() < SIZE_BUCKETS[2][0] * num_shapes else -1   # large ones sit behind

    masks = []
    for k, label in enumerate(labels):
        box = _sample_box(rng, size, large=(k == large_index))
        mask = _shape_mask(rng, int(label), box, size)
        colour = np.array(_bright_colour(rng), dtype=np.float32)
        shade = 1.0 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, size, dtype=np.float32)[None, :, None]
        image = np.where(mask[..., None], colour * shade, image)
        masks.append(mask)

    image = image + rng.normal(0.0, rng.uniform(4, 12), size=image.shape).astype(np.float32)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    objects = [(int(labels[k]), box) for k, box in visible_boxes(masks)]
    return pixels, objects


def visible_boxes(masks: List[np.ndarray]) -> List[Tuple[int, List[int]]]:
    """Occlusion bookkeeping for masks painted in order (later ones on top).

    Returns ``(index, [x, y, w, h])`` for every mask with at least ``MIN_VISIBLE_FRACTION`` of its pixels
    still visible, the box tight around those visible pixels.
    """
    if not masks:
        return []
    stack = np.stack(masks)                                          # K x H x W
    # the top-most painter of each pixel: the last k whose mask covers it
    covered = stack.any(axis=0)
    top = len(masks) - 1 - np.argmax(stack[::-1], axis=0)
    visible = (top[None] == np.arange(len(masks))[:, None, None]) & covered[None]
    full_area = stack.reshape(len(masks), -1).sum(axis=1)
    visible_area = visible.reshape(len(masks), -1).sum(axis=1)
    keep = (full_area > 0) & (visible_area >= MIN_VISIBLE_FRACTION * full_area)
    boxes = []
    for k in np.flatnonzero(keep):
        rows = np.flatnonzero(visible[k].any(axis=1))
        cols = np.flatnonzero(visible[k].any(axis=0))
        x, y = int(cols[0]), int(rows[0])
        boxes.append((int(k), [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y]))
    return boxes


# ---------------------------------------------------------------------------------------------- writing
def _write_split(root: str, split: str, num_images: int, size: int, rng: np.random.Generator) -> Dict:
    img_dir = os.path.join(root, split)
    os.makedirs(img_dir)
    images, annotations = [], []
    for i in range(num_images):
        # the first images of each split carry one guaranteed object of each class
        forced = i if i < len(CLASSES) else -1
        pixels, objects = _render_image(rng, size, forced_label=forced)
        file_name = f'{i:06d}.png'
        # Pillow writes no tIME chunk unless asked, so identical pixels give identical bytes
        Image.fromarray(pixels).save(os.path.join(img_dir, file_name), format='PNG', compress_level=6)
        image_id = i + 1
        images.append(dict(id=image_id, file_name=file_name, width=size, height=size))
        for label, bbox in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=label + 1,
                                    bbox=bbox, area=bbox[2] * bbox[3], iscrowd=0))
    coco = dict(
        info=dict(description=f'detkds-search synthetic shapes ({split})', version='1.0'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(CLASSES)],
    )
    ann_file = os.path.join(root, 'annotations', f'{split}.json')
    with open(ann_file, 'w', encoding='utf-8') as f:
        json.dump(coco, f, separators=(',', ':'))
    return dict(images=len(images), annotations=len(annotations))


def _is_nonempty_dir(path: str) -> bool:
    return os.path.isdir(path) and bool(os.listdir(path))


def generate_shapes(out_dir: str, num_train: int = 600, num_val: int = 150, size: int = 128, seed: int = 0,
                    overwrite: bool = False) -> Dict:
    """Write a synthetic COCO-format dataset to ``out_dir`` and return a summary.

    Layout: ``out_dir/{train,val}/*.png`` and ``out_dir/annotations/{train,val}.json`` (category ids 1..3 in
    the order of ``CLASSES``). Raises ``DataError`` for bad arguments or a non-empty ``out_dir`` without
    ``overwrite=True``.
    """
    counts = {'train': num_train, 'val': num_val}
    for split, n in counts.items():
        if not isinstance(n, int) or n < len(CLASSES):
            raise DataError(f'num_{split} must be an integer >= {len(CLASSES)} (one image per class at least), '
                            f'got {n!r}')
    if not isinstance(size, int) or size < 32:
        raise DataError(f'image size must be an integer >= 32, got {size!r}')
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f'dataset path {out_dir} exists and is not a folder')
    if _is_nonempty_dir(out_dir) and not overwrite:
        raise DataError(f'dataset folder {out_dir} is not empty (pass overwrite=True / --overwrite to replace it)')

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out_dir)}.tmp-', dir=parent)
    try:
        os.makedirs(os.path.join(tmp, 'annotations'))
        # one child stream per split: train and val are independent, and adding train images leaves val as is
        streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
        stats = {split: _write_split(tmp, split, counts[split], size, np.random.default_rng(stream))
                 for split, stream in zip(SPLITS, streams)}
        os.chmod(tmp, 0o755)        # mkdtemp makes it private; a dataset is ordinary data
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return dict(
        root=out_dir, size=size, seed=seed, classes=list(CLASSES),
        splits={split: dict(ann_file=os.path.join(out_dir, 'annotations', f'{split}.json'),
                            img_dir=os.path.join(out_dir, split), **stats[split]) for split in SPLITS})


def _replace_dir(src: str, dst: str) -> None:
    """Move the finished ``src`` to ``dst``; an existing ``dst`` is swapped out first and removed after."""
    if not os.path.exists(dst):
        os.rename(src, dst)
        return
    old = tempfile.mkdtemp(prefix=f'.{os.path.basename(dst)}.old-', dir=os.path.dirname(dst))
    os.rmdir(old)
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)          # put the previous dataset back
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- checking
def check_coco_dataset(root: str, split: str) -> Dict[str, str]:
    """Check that ``root`` holds ``annotations/<split>.json`` and the image folder ``<split>/``.

    Returns ``{'ann_file': ..., 'img_dir': ...}``; raises ``DataError`` with a one-line message otherwise.
    """
    if not os.path.isdir(root):
        raise DataError(f'dataset folder not found: {root}')
    ann_file = os.path.join(root, 'annotations', f'{split}.json')
    img_dir = os.path.join(root, split)
    if not os.path.isfile(ann_file):
        raise DataError(f'dataset {root} has no annotation file annotations/{split}.json')
    if not os.path.isdir(img_dir):
        raise DataError(f'dataset {root} has no image folder {split}/')
    try:
        with open(ann_file, encoding='utf-8') as f:
            coco = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f'cannot read annotation file {ann_file}: {exc}') from None
    if not isinstance(coco, dict):
        raise DataError(f'annotation file {ann_file} is not COCO format (not a JSON object)')
    missing = [key for key in ('images', 'annotations', 'categories') if key not in coco]
    if missing:
        raise DataError(f'annotation file {ann_file} is not COCO format (missing {", ".join(missing)})')
    return dict(ann_file=ann_file, img_dir=img_dir)
