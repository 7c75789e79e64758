"""The synthetic shapes dataset: determinism, COCO validity, box geometry, size buckets, atomic writes."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from distill_core import shapes
from distill_core.errors import DataError
from distill_core.shapes import CLASSES, check_coco_dataset, generate_shapes, visible_boxes


def _files(root):
    out = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes') / 'ds'
    summary = generate_shapes(str(root), num_train=100, num_val=20, size=128, seed=0)
    return str(root), summary


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_shapes(str(tmp_path / 'a'), num_train=6, num_val=4, seed=3)
    b = generate_shapes(str(tmp_path / 'b'), num_train=6, num_val=4, seed=3)
    c = generate_shapes(str(tmp_path / 'c'), num_train=6, num_val=4, seed=4)
    files_a, files_b, files_c = _files(a['root']), _files(b['root']), _files(c['root'])
    assert len(files_a) == 6 + 4 + 2
    assert files_a == files_b
    assert files_a['annotations/train.json'] != files_c['annotations/train.json']
    assert files_a['train/000000.png'] != files_c['train/000000.png']


def test_train_and_val_come_from_different_streams(dataset):
    root, _ = dataset
    with open(os.path.join(root, 'train', '000000.png'), 'rb') as f_train, \
            open(os.path.join(root, 'val', '000000.png'), 'rb') as f_val:
        assert f_train.read() != f_val.read()


def test_summary_and_coco_files_load_with_pycocotools(dataset):
    root, summary = dataset
    assert summary['classes'] == list(CLASSES)
    for split, n in (('train', 100), ('val', 20)):
        info = summary['splits'][split]
        assert info['images'] == n
        coco = COCO(info['ann_file'])
        assert len(coco.getImgIds()) == n
        assert len(coco.getAnnIds()) == info['annotations']
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        for img in coco.loadImgs(coco.getImgIds()[:5]):
            with Image.open(os.path.join(info['img_dir'], img['file_name'])) as pic:
                assert pic.size == (img['width'], img['height']) == (128, 128)
                assert pic.mode == 'RGB'


@pytest.mark.parametrize('split', ['train', 'val'])
def test_boxes_inside_images_and_every_class_present(dataset, split):
    root, _ = dataset
    with open(os.path.join(root, 'annotations', f'{split}.json')) as f:
        data = json.load(f)
    sizes = {img['id']: (img['width'], img['height']) for img in data['images']}
    boxes = np.array([a['bbox'] for a in data['annotations']], dtype=float)
    assert (boxes[:, 2:] > 0).all()
    assert (boxes[:, :2] >= 0).all()
    limits = np.array([sizes[a['image_id']] for a in data['annotations']], dtype=float)
    assert (boxes[:, :2] + boxes[:, 2:] <= limits).all()
    assert all(a['area'] == a['bbox'][2] * a['bbox'][3] and a['iscrowd'] == 0 for a in data['annotations'])
    assert len({a['id'] for a in data['annotations']}) == len(data['annotations'])
    assert {a['category_id'] for a in data['annotations']} == {1, 2, 3}
    per_image = np.bincount([a['image_id'] for a in data['annotations']])[1:]
    assert per_image.min() >= 1 and per_image.max() <= shapes.MAX_SHAPES_PER_IMAGE


def test_size_buckets_small_and_medium_dominate_some_large(dataset):
    root, _ = dataset
    with open(os.path.join(root, 'annotations', 'train.json')) as f:
        anns = json.load(f)['annotations']
    areas = np.array([a['area'] for a in anns])
    small, large = (areas < 32 ** 2).mean(), (areas > 96 ** 2).mean()
    medium = 1 - small - large
    assert small > 0.3 and medium > 0.25
    assert 0 < large < 0.15
    aspects = np.array([a['bbox'][2] / a['bbox'][3] for a in anns])
    assert aspects.min() < 0.7 and aspects.max() > 1.4


@pytest.mark.parametrize('label', range(len(CLASSES)))
def test_each_shape_fills_its_box_tightly(label):
    rng = np.random.default_rng(label)
    for box in [(3, 5, 20, 9), (40, 10, 9, 30), (0, 0, 64, 64)]:
        mask = shapes._shape_mask(rng, label, box, 64)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert (cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]) == box


def test_occlusion_drops_mostly_hidden_shapes_and_shrinks_boxes():
    def rect(x0, y0, x1, y1):
        m = np.zeros((20, 20), dtype=bool)
        m[y0:y1, x0:x1] = True
        return m
    under = rect(0, 0, 10, 10)              # 100 px
    covers_left_half = rect(0, 0, 5, 10)     # hides 50 of them: kept, box = right half
    covers_80 = rect(0, 0, 10, 8)            # hides 80: dropped
    assert visible_boxes([under, covers_left_half]) == [(0, [5, 0, 5, 10]), (1, [0, 0, 5, 10])]
    assert visible_boxes([under, covers_80]) == [(1, [0, 0, 10, 8])]
    # exactly 30% visible is the boundary that is still annotated
    assert visible_boxes([under, rect(0, 0, 10, 7)])[0] == (0, [0, 7, 10, 3])
    # later shapes win, earlier ones never hide later ones
    assert visible_boxes([covers_80, under]) == [(1, [0, 0, 10, 10])]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    root = tmp_path / 'ds'
    generate_shapes(str(root), num_train=3, num_val=3, seed=0)
    before = _files(str(root))
    with pytest.raises(DataError, match='not empty'):
        generate_shapes(str(root), num_train=4, num_val=3, seed=1)
    assert _files(str(root)) == before
    summary = generate_shapes(str(root), num_train=4, num_val=3, seed=1, overwrite=True)
    assert summary['splits']['train']['images'] == 4
    assert len(os.listdir(root / 'train')) == 4
    assert sorted(os.listdir(tmp_path)) == ['ds']       # no temporary or old folders left behind
    empty = tmp_path / 'empty'
    empty.mkdir()
    generate_shapes(str(empty), num_train=3, num_val=3)  # an empty folder is not "existing data"


def test_failed_generation_leaves_previous_dataset_and_no_partial_folder(tmp_path, monkeypatch):
    root = tmp_path / 'ds'
    generate_shapes(str(root), num_train=3, num_val=3, seed=0)
    before = _files(str(root))
    real_write = shapes._write_split

    def fail_on_val(tmp_root, split, *args):
        if split == 'val':
            raise OSError('disk full')
        return real_write(tmp_root, split, *args)
    monkeypatch.setattr(shapes, '_write_split', fail_on_val)
    with pytest.raises(OSError, match='disk full'):
        generate_shapes(str(root), num_train=5, num_val=3, seed=2, overwrite=True)
    with pytest.raises(OSError, match='disk full'):
        generate_shapes(str(tmp_path / 'fresh'), num_train=5, num_val=3)
    assert _files(str(root)) == before
    assert sorted(os.listdir(tmp_path)) == ['ds']


@pytest.mark.parametrize('kwargs', [dict(num_train=2), dict(num_val=0), dict(size=16)])
def test_bad_arguments_are_data_errors(tmp_path, kwargs):
    with pytest.raises(DataError):
        generate_shapes(str(tmp_path / 'x'), **kwargs)
    assert not (tmp_path / 'x').exists()


def test_check_coco_dataset(tmp_path):
    root = tmp_path / 'ds'
    generate_shapes(str(root), num_train=3, num_val=3)
    assert check_coco_dataset(str(root), 'val') == dict(
        ann_file=str(root / 'annotations' / 'val.json'), img_dir=str(root / 'val'))

    def error(path, split):
        with pytest.raises(DataError) as info:
            check_coco_dataset(str(path), split)
        message = str(info.value)
        assert '\n' not in message
        return message
    assert 'not found' in error(tmp_path / 'missing', 'val')
    assert 'annotations/test.json' in error(root, 'test')
    os.rename(root / 'val', root / 'val_moved')
    assert 'image folder val/' in error(root, 'val')
    (root / 'annotations' / 'train.json').write_text('{"images": [], ')
    assert 'cannot read' in error(root, 'train')
    (root / 'annotations' / 'train.json').write_text('{"images": [], "categories": []}')
    assert 'missing annotations' in error(root, 'train')
    (root / 'annotations' / 'train.json').write_text('[1, 2]')
    assert 'not COCO' in error(root, 'train')


# ---------------------------------------------------------------------------------------------- instance masks
def _pixels_and_boxes_digest(root):
    """sha256 of every image's pixels and every annotation without its mask, in file order."""
    import hashlib
    digest = hashlib.sha256()
    for split in shapes.SPLITS:
        with open(os.path.join(root, 'annotations', f'{split}.json')) as f:
            coco = json.load(f)
        for img in coco['images']:
            with Image.open(os.path.join(root, split, img['file_name'])) as pic:
                digest.update(np.asarray(pic).tobytes())
        digest.update(json.dumps([[a[k] for k in ('id', 'image_id', 'category_id', 'bbox', 'area', 'iscrowd')]
                                  for a in coco['annotations']]).encode())
    return digest.hexdigest()


def test_masks_leave_images_and_boxes_as_the_box_only_generator_made_them(tmp_path):
    # digest taken with the generator before masks existed: cached datasets, teachers and benchmarks stay valid
    generate_shapes(str(tmp_path / 'ds'), num_train=5, num_val=4, size=96, seed=3)
    assert _pixels_and_boxes_digest(str(tmp_path / 'ds')) == \
        'dcf607047e01ef729a53c0d724a88217a30154683ba6e09206c6b1adc7d34db6'


@pytest.mark.parametrize('split', ['train', 'val'])
def test_every_annotation_has_an_exact_polygon_inside_its_box(dataset, split):
    from pycocotools import mask as mask_utils
    root, _ = dataset
    coco = COCO(os.path.join(root, 'annotations', f'{split}.json'))
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns
    for ann in anns:
        (polygon,) = ann['segmentation']
        assert len(polygon) >= 6 and len(polygon) % 2 == 0            # >= 3 points: mmdet keeps it
        x, y, w, h = ann['bbox']
        xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
        assert xs.min() == x and xs.max() == x + w and ys.min() == y and ys.max() == y + h
        rle = coco.annToRLE(ann)                                       # pycocotools' own rasterisation
        assert shapes.polygon_area(polygon) == mask_utils.area(rle) > 0
        assert mask_utils.toBbox(rle).tolist() == ann['bbox']          # the mask is tight in its box
        # a triangle fills about half its box and occlusion leaves at least 30% of a shape
        assert mask_utils.area(rle) >= 0.1 * w * h


def test_mask_of_an_occluded_shape_is_its_visible_pixels_holes_and_pieces_included():
    from pycocotools import mask as mask_utils
    under = np.zeros((24, 24), dtype=bool)
    under[2:22, 2:22] = True
    hole = np.zeros_like(under)
    hole[8:12, 8:12] = True                   # a shape on top, inside: a hole
    strip = np.zeros_like(under)
    strip[15:17, 0:24] = True                 # a shape across it: two pieces
    (k, box, visible), _, _ = shapes.visible_objects([under, hole, strip])
    assert k == 0 and box == [2, 2, 20, 20]
    assert visible.sum() == 400 - 16 - 40
    polygon = shapes.mask_polygon(visible)
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], 24, 24))).astype(bool)
    assert (decoded == visible).all()
    assert shapes.polygon_area(polygon) == visible.sum()


def test_random_masks_round_trip_through_pycocotools():
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.random((13, 11)) < rng.uniform(0.2, 0.8)   # many pieces, holes, corner-touching pixels
        if not mask.any():
            continue
        polygon = shapes.mask_polygon(mask)
        decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], 13, 11))).astype(bool)
        assert (decoded == mask).all()


def test_masks_are_added_to_a_box_only_dataset_and_mask_configs_say_how(tmp_path):
    root = str(tmp_path / 'ds')
    generate_shapes(root, num_train=4, num_val=3, size=64, seed=1)
    fresh = _files(root)
    for split in shapes.SPLITS:   # what a dataset generated before masks existed looks like
        path = os.path.join(root, 'annotations', f'{split}.json')
        with open(path) as f:
            coco = json.load(f)
        for ann in coco['annotations']:
            del ann['segmentation']
        with open(path, 'w') as f:
            json.dump(coco, f, separators=(',', ':'))
    ann_file = os.path.join(root, 'annotations', 'train.json')
    with pytest.raises(DataError, match=r'no instance mask .* `detkds-search data shapes --out .* --overwrite`'):
        shapes.require_instance_masks(ann_file)
    with pytest.raises(DataError, match='was not generated with'):
        shapes.add_instance_masks(root, num_train=4, num_val=3, size=64, seed=2)
    shapes.add_instance_masks(root, num_train=4, num_val=3, size=64, seed=1)
    assert _files(root) == fresh
    shapes.require_instance_masks(ann_file)
