"""The demo Mask R-CNN search: its config loads, validates and resolves its space (the ``mask`` input offered),
the proxy's fitness follows ``proxy.metric`` (mask AP or box AP, the other beside it), a bad metric is a one-line
error, and segm AP is pycocotools' on exact masks (a perfect prediction scores 1.0)."""
import random
import os.path as osp

import numpy as np
import pytest
import torch

from distill_core.errors import ConfigError
from distill_core.genome import Genome, OpSpec, Term
from search.config import load_search_config
from search.evolution import StagePlan
from search.operators import build_ops
from search.space import Space
from workers.proxy import run_proxy_trial
from workers.proxy_eval import METRIC_KEYS, coco_metrics, detections_to_coco, load_coco
from workers.settings import check_search_config

from .demo_utils import ROOT, tiny_proxy

CONFIG = osp.join(ROOT, 'configs', 'search', 'demo_mask_rcnn.py')
MASK_TERM = Term('mask', True, (OpSpec('no'),), OpSpec('l2'), 1.0)


@pytest.fixture(scope='module')
def search_cfg():
    return load_search_config(CONFIG, base_dir=ROOT)


@pytest.fixture(scope='module')
def tiny(search_cfg, demo_teacher_checkpoint, shapes_root):
    """The search config's raw sections on the test data: a random teacher, a 2-iteration proxy on 4 + 4 images."""
    return tiny_proxy(search_cfg.raw, shapes_root, demo_teacher_checkpoint('mask_rcnn'), train_images=4)


def test_config_loads_validates_and_resolves_its_space(search_cfg):
    assert search_cfg.family() == 'mask_rcnn'
    assert check_search_config(search_cfg.raw, CONFIG).metric == 'segm'
    space = Space.from_file(search_cfg.space_path)
    plan = StagePlan.from_config(search_cfg.raw['search'], CONFIG)
    stage1, _ = build_ops(space, plan.stage1_inputs or None, search_cfg.family())
    assert set(stage1) == {'global', 'mask'}
    assert 'mask' in space.offered_inputs(search_cfg.family())
    assert 'cross_head' not in space.offered_inputs(search_cfg.family())
    genome = stage1['mask'].sample(random.Random(0))
    space.validate(genome, 'mask_rcnn')


def test_proxy_fitness_follows_proxy_metric(tiny):
    genome = Genome((MASK_TERM,)).to_json()
    reports = []
    by_mask = run_proxy_trial(tiny, genome, seed=0, report=reports.append, base_dir=ROOT)
    assert set(METRIC_KEYS) <= set(by_mask.metrics)
    assert {f'bbox_{key}' for key in METRIC_KEYS} <= set(by_mask.metrics)
    assert 'loss_searched_mask' in reports[0] and np.isfinite(reports[0]['loss_searched_mask'])
    assert 'AP' in reports[-1] and 'bbox_AP' in reports[-1]

    by_box = run_proxy_trial(dict(tiny, proxy=dict(tiny['proxy'], metric='bbox')), genome, seed=0, base_dir=ROOT)
    assert {f'segm_{key}' for key in METRIC_KEYS} <= set(by_box.metrics)
    # the same deterministic training: only which AP is the fitness (`AP`) changes
    for key in METRIC_KEYS:
        assert by_mask.metrics[key] == pytest.approx(by_box.metrics[f'segm_{key}'], nan_ok=True)
        assert by_box.metrics[key] == pytest.approx(by_mask.metrics[f'bbox_{key}'], nan_ok=True)


def test_bad_proxy_metric_is_a_one_line_error(tiny):
    with pytest.raises(ConfigError, match=r"proxy.metric: expected one of bbox, segm, got 'mask'"):
        check_search_config(dict(tiny, proxy=dict(tiny['proxy'], metric='mask')))
    retinanet = dict(tiny, student=dict(config='configs/demo/retinanet_student.py'))
    with pytest.raises(ConfigError, match=r'proxy.metric = "segm" \(mask AP\) needs a student with a mask head; '
                                          r'.*retinanet_student.py \(RetinaNet\) has none'):
        run_proxy_trial(retinanet, None, seed=0, base_dir=ROOT)


def _ground_truth_as_predictions(gt, img_ids, cat_ids, shift=0):
    """DetDataSamples predicting every GT box and mask (masks rolled right by ``shift`` pixels), score 1."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    samples = []
    for img_id in img_ids:
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[img_id]))
        xywh = np.array([a['bbox'] for a in anns], dtype=np.float32).reshape(-1, 4)
        masks = np.stack([np.roll(gt.annToMask(a), shift, axis=1) for a in anns]).astype(bool)
        sample = DetDataSample(metainfo=dict(img_id=img_id, ori_shape=(128, 128)))
        sample.pred_instances = InstanceData(
            bboxes=torch.tensor(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)),
            scores=torch.ones(len(anns)), labels=torch.tensor([cat_ids.index(a['category_id']) for a in anns]),
            masks=torch.from_numpy(masks))
        samples.append(sample)
    return samples


def test_segm_ap_of_a_perfect_prediction_is_one(shapes_root):
    gt = load_coco(osp.join(shapes_root, 'annotations', 'val.json'))
    img_ids, cat_ids = sorted(gt.getImgIds()), sorted(gt.getCatIds())
    perfect = detections_to_coco(_ground_truth_as_predictions(gt, img_ids, cat_ids), cat_ids)
    assert coco_metrics(gt, perfect, img_ids, cat_ids, 'segm')['AP'] == 1.0
    assert coco_metrics(gt, perfect, img_ids, cat_ids, 'bbox')['AP'] == 1.0
    # masks 3 px off, boxes still exact: the mask AP drops (it reads the masks), the box AP does not
    shifted = detections_to_coco(_ground_truth_as_predictions(gt, img_ids, cat_ids, shift=3), cat_ids)
    assert coco_metrics(gt, shifted, img_ids, cat_ids, 'segm')['AP'] < 0.9
    assert coco_metrics(gt, shifted, img_ids, cat_ids, 'bbox')['AP'] == 1.0


def test_preparation_adds_masks_to_a_dataset_generated_without_them(tiny, tmp_path):
    import json
    from distill_core.shapes import annotations_without_masks, generate_shapes
    from workers.prepare import prepare_search_inputs
    args = dict(num_train=8, num_val=3, size=128, seed=0)
    out = tmp_path / 'shapes'
    generate_shapes(str(out), **args)
    for split in ('train', 'val'):   # as the generator wrote it before masks existed
        path = out / 'annotations' / f'{split}.json'
        coco = json.loads(path.read_text())
        for ann in coco['annotations']:
            ann.pop('segmentation')
        path.write_text(json.dumps(coco))
    image = (out / 'train' / '000000.png').read_bytes()
    cfg = dict(tiny, data=dict(generate_shapes=dict(out=str(out), **args)))
    lines = []
    prepare_search_inputs(cfg, ROOT, log=lines.append)
    assert any('has no instance masks' in line for line in lines)
    assert annotations_without_masks(str(out / 'annotations' / 'train.json')) == 0
    assert (out / 'train' / '000000.png').read_bytes() == image
