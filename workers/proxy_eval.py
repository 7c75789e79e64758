"""COCO box AP (and mask AP, for a detector with a mask head) on the proxy's held-out images, in memory, with
pycocotools.

Why not MMDetection's ``CocoMetric`` directly: (1) it rounds every AP to 3 decimals, too coarse to rank proxy
candidates whose APs differ in the 4th decimal; (2) unless ``img_ids`` is set by hand it evaluates every image
of the annotation file, so images the proxy never ran would count as misses; (3) it writes result files.
The computation is the same (pycocotools ``COCOeval``, ``maxDets`` 100/300/1000 and the class order of the
dataset, masks RLE-encoded as CocoMetric encodes them); ``tests/test_workers_proxy.py`` checks the numbers against
``CocoMetric`` restricted to the same images.

``proxy.metric`` picks the fitness: its numbers are reported under ``METRIC_KEYS`` (``AP`` is what the search
ranks), the other metric's, where the model has it, under ``<metric>_AP``, ``<metric>_AP50``...
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, Iterable, List, Sequence

import numpy as np
import torch

from workers.settings import PROXY_METRICS   # COCOeval iouTypes: proxy.metric's choices

METRIC_KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')   # COCOeval.stats[0:6]
MAX_DETS = (100, 300, 1000)                                  # as CocoMetric's proposal_nums


@contextlib.contextmanager
def quiet_stdout():
    """pycocotools prints progress and tables; trial logs stay readable without them."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_coco(ann_file: str):
    from pycocotools.coco import COCO
    with quiet_stdout():
        return COCO(ann_file)


def detections_to_coco(data_samples: Iterable, cat_ids: Sequence[int]) -> List[dict]:
    """COCO result dicts (xywh boxes; with a mask head, each box's mask as compressed RLE) from predicted
    DetDataSamples (boxes and masks in original image pixels)."""
    from pycocotools import mask as mask_utils
    results = []
    for sample in data_samples:
        pred = sample.pred_instances
        boxes = pred.bboxes.detach().cpu().numpy().astype(np.float64)
        scores = pred.scores.detach().cpu().numpy().astype(np.float64)
        labels = pred.labels.detach().cpu().numpy()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        img_id = int(sample.img_id)
        found = [{'image_id': img_id, 'bbox': box.tolist(), 'score': float(score),
                  'category_id': int(cat_ids[int(label)])} for box, score, label in zip(xywh, scores, labels)]
        if 'masks' in pred and len(found):
            masks = np.asfortranarray(pred.masks.detach().cpu().numpy().astype(np.uint8).transpose(1, 2, 0))
            for result, rle in zip(found, mask_utils.encode(masks)):
                result['segmentation'] = rle
        results.extend(found)
    return results


def coco_metrics(gt, detections: List[dict], img_ids: Sequence[int], cat_ids: Sequence[int],
                 iou_type: str = 'bbox') -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl of boxes (``bbox``) or masks (``segm``) on ``img_ids`` only; -1 (no ground
    truth in a size bucket) -> nan."""
    from pycocotools.cocoeval import COCOeval
    with quiet_stdout():
        if detections:
            dt = gt.loadRes(detections)
        else:   # loadRes rejects an empty list; an empty result set scores 0 (or -1 where no GT)
            from pycocotools.coco import COCO
            dt = COCO()
            dt.dataset = {'images': list(gt.dataset['images']), 'categories': list(gt.dataset['categories']),
                          'annotations': []}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.params.imgIds = list(img_ids)
        evaluator.params.catIds = list(cat_ids)
        evaluator.params.maxDets = list(MAX_DETS)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {key: (float('nan') if value < 0 else float(value))
            for key, value in zip(METRIC_KEYS, evaluator.stats[:len(METRIC_KEYS)])}


@torch.no_grad()
def predict_all(model, loader) -> List:
    """The model's predictions (rescaled to original image size) on every batch of ``loader``."""
    samples = []
    for data in loader:
        samples.extend(model.test_step(data))
    return samples


def evaluate_detector(model, loader, gt, img_ids: Sequence[int], cat_ids: Sequence[int],
                      metric: str = 'bbox') -> Dict[str, float]:
    """Evaluate ``model`` in eval mode on ``loader``: ``metric``'s AP under ``METRIC_KEYS``, plus the other
    metric's as ``<other>_AP``... where the model predicts masks. The caller's train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        samples = predict_all(model, loader)
    finally:
        model.train(was_training)
    seen = {int(s.img_id) for s in samples}
    if seen != {int(i) for i in img_ids}:
        raise RuntimeError(f'proxy evaluation saw {len(seen)} images, expected {len(img_ids)}')
    detections = detections_to_coco(samples, cat_ids)
    has_masks = all('masks' in s.pred_instances for s in samples)
    metrics = coco_metrics(gt, detections, img_ids, cat_ids, metric)
    for other in PROXY_METRICS:
        if other != metric and (other == 'bbox' or has_masks):
            metrics.update({f'{other}_{key}': value
                            for key, value in coco_metrics(gt, detections, img_ids, cat_ids, other).items()})
    return metrics
