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

Every annotation carries an exact instance mask: ``segmentation`` is one COCO polygon tracing the pixel-corner
outline of the shape's *visible* pixels (``mask_polygon``), so pycocotools rasterises it back to exactly those
pixels, its shoelace area is their count and it lies inside the box. Masks are derived from the drawing after
the fact (no random draw), so images and boxes are those of the box-only generator for the same arguments.

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
from typing import Dict, List, Sequence, Tuple

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
    objects = [(int(labels[k]), box, visible) for k, box, visible in visible_objects(masks)]
    return pixels, objects


def visible_boxes(masks: List[np.ndarray]) -> List[Tuple[int, List[int]]]:
    """Occlusion bookkeeping for masks painted in order (later ones on top).

    Returns ``(index, [x, y, w, h])`` for every mask with at least ``MIN_VISIBLE_FRACTION`` of its pixels
    still visible, the box tight around those visible pixels.
    """
    return [(k, box) for k, box, _ in visible_objects(masks)]


def visible_objects(masks: List[np.ndarray]) -> List[Tuple[int, List[int], np.ndarray]]:
    """``visible_boxes`` plus each kept shape's visible pixels (boolean HxW): its instance mask."""
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
        boxes.append((int(k), [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y], visible[k]))
    return boxes


# ---------------------------------------------------------------------------------------------- masks
def _outline_loops(mask: np.ndarray) -> List[List[Tuple[int, int]]]:
    """The closed loops of pixel-corner vertices ``(x, y)`` bounding ``mask``: every pixel side between a mask
    pixel and a non-mask one, walked with the mask on the same side, so outer outlines and hole outlines turn in
    opposite directions. Collinear vertices are dropped."""
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    step: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}

    def add(rows, cols, start, end):
        for r, c in zip(rows.tolist(), cols.tolist()):
            step.setdefault((c + start[0], r + start[1]), []).append((c + end[0], r + end[1]))

    # the four sides of pixel (r, c), each walked so that the pixel lies on its left (y pointing down)
    add(*np.nonzero(inside & ~padded[:-2, 1:-1]), (1, 0), (0, 0))   # top side, walked leftwards
    add(*np.nonzero(inside & ~padded[2:, 1:-1]), (0, 1), (1, 1))    # bottom side, rightwards
    add(*np.nonzero(inside & ~padded[1:-1, :-2]), (0, 0), (0, 1))   # left side, downwards
    add(*np.nonzero(inside & ~padded[1:-1, 2:]), (1, 1), (1, 0))    # right side, upwards
    loops = []
    for start in sorted(step):           # sorted: the same mask always gives the same polygon
        while step.get(start):
            loop, vertex = [start], step[start].pop()
            while vertex != start:
                loop.append(vertex)
                vertex = step[vertex].pop()   # where two loops touch at a corner either way closes a loop
            loops.append(_drop_collinear(loop))
    return loops


def _drop_collinear(loop: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    n = len(loop)
    kept = []
    for i, (x, y) in enumerate(loop):
        (px, py), (nx, ny) = loop[i - 1], loop[(i + 1) % n]
        if (x - px) * (ny - y) - (y - py) * (nx - x) != 0:   # a turn: a corner of the outline
            kept.append((x, y))
    return kept


def mask_polygon(mask: np.ndarray) -> List[float]:
    """One flat COCO polygon ``[x0, y0, x1, y1, ...]`` whose even-odd fill is exactly ``mask``.

    Every outline loop of the mask (outer outlines of each piece and the outlines of its holes, since occluders
    punch holes and split shapes) is chained into a single polygon: after each loop the path returns to the
    first loop's start, so every connecting segment is walked once each way and cancels out in pycocotools'
    (and mmdet's) even-odd rasterisation, while the loops' own sides toggle exactly the mask's pixels. A plain
    list of polygons would be rasterised as a union, which cannot express holes.
    """
    loops = _outline_loops(mask)
    if not loops:
        raise ValueError('mask_polygon: empty mask')
    anchor = loops[0][0]
    points = list(loops[0]) + [anchor]
    for loop in loops[1:]:
        points += list(loop) + [loop[0], anchor]
    points.pop()                          # the polygon closes back to the anchor by itself
    return [float(v) for point in points for v in point]


def polygon_area(polygon: Sequence[float]) -> float:
    """Shoelace area of a flat polygon (absolute value): for ``mask_polygon`` the mask's pixel count."""
    xs, ys = np.asarray(polygon[0::2], dtype=np.float64), np.asarray(polygon[1::2], dtype=np.float64)
    return abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))) / 2.0


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
        for label, bbox, visible in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=label + 1,
                                    bbox=bbox, area=bbox[2] * bbox[3], iscrowd=0,
                                    segmentation=[mask_polygon(visible)]))
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


def add_instance_masks(root: str, num_train: int = 600, num_val: int = 150, size: int = 128, seed: int = 0) -> None:
    """Give a shapes dataset generated before masks existed its instance masks, images untouched.

    The dataset is generated again with the same arguments in a temporary folder; when its image list and box
    annotations equal the existing ones (so the arguments are those it was made with), only the annotation
    files are swapped in (each atomically). Raises DataError, naming the fix, when they differ.
    """
    root = os.path.abspath(root)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(root)}.masks-', dir=os.path.dirname(root))
    try:
        fresh = os.path.join(tmp, 'shapes')
        generate_shapes(fresh, num_train=num_train, num_val=num_val, size=size, seed=seed)
        for split in SPLITS:
            old, new = (_read_json(os.path.join(folder, 'annotations', f'{split}.json')) for folder in (root, fresh))
            if old['images'] != new['images'] or _box_annotations(old) != _box_annotations(new):
                raise DataError(f'{root} was not generated with num_train={num_train}, num_val={num_val}, '
                                f'size={size}, seed={seed}, so its masks cannot be added: regenerate it with '
                                f'`detkds-search data shapes --out {root} --overwrite` and its own arguments')
        for split in SPLITS:
            os.replace(os.path.join(fresh, 'annotations', f'{split}.json'),
                       os.path.join(root, 'annotations', f'{split}.json'))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_json(path: str) -> Dict:
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _box_annotations(coco: Dict) -> List[Dict]:
    return [{k: v for k, v in ann.items() if k != 'segmentation'} for ann in coco['annotations']]


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


def annotations_without_masks(ann_file: str) -> int:
    """How many annotations of a COCO file have no (truthy) ``segmentation``: MMDetection's mask loading raises
    a bare KeyError on the first one, so mask-head configs check first (``require_instance_masks``)."""
    return sum(1 for ann in _read_json(ann_file).get('annotations', ()) if not ann.get('segmentation'))


def require_instance_masks(ann_file: str) -> None:
    """Raise DataError (one line, naming the fix) when ``ann_file`` has annotations without instance masks."""
    missing = annotations_without_masks(ann_file)
    if missing:
        root = os.path.dirname(os.path.dirname(os.path.abspath(ann_file)))
        raise DataError(f'{ann_file}: {missing} annotations have no instance mask (segmentation), which a mask head '
                        f'needs; a shapes dataset generated before masks existed: regenerate it with `detkds-search '
                        f'data shapes --out {root} --overwrite` (same images and boxes, with masks)')
