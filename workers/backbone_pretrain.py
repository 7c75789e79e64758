"""Pretrain a detector's backbone on the shapes training images: the demo's stand-in for ImageNet weights.

Real students and teachers start from an ImageNet-pretrained backbone; a demo student that starts from random
weights spends a short proxy learning to see at all, so the proxy measured learning from zero more than
distillation. Nothing can be downloaded here, so the closest stand-in is an object-centric classification
pretext on the detection training images, as ImageNet is: square crops around each annotated object (with
random context 1.1-1.8x its longer side and a random shift) are classified into the dataset's classes, and crops
that contain no object (no box has 30 % or more of its area inside) into one more class, ``background``. Crops
are cut and resized to ``crop_size`` by RoIAlign (bilinear), flipped at random, and normalised exactly as the
detector's data preprocessor normalises its images, so the detector sees the inputs the backbone learned on.

The checkpoint holds the backbone's tensors only (keys without ``backbone.``) and plain metadata (architecture,
iterations, held-out accuracy); ``distill_core.pretrained_backbone.PretrainedBackbone`` loads it strictly.
"""
from __future__ import annotations

import json
import math
import os.path as osp
import random
from dataclasses import asdict
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from distill_core.errors import DataError
from workers.allocator import tune_cpu_allocator
from workers.progress import Log, ProgressLine, quiet_mmengine
from workers.settings import PretrainSettings

OBJECT_CONTEXT = (1.1, 1.8)       # crop side / longer box side
MAX_SHIFT = 0.15                  # crop centre shift, as a fraction of the crop side
BACKGROUND_MAX_COVER = 0.3        # a background crop holds less than this fraction of every box
BACKGROUND_SIDE = (0.12, 0.75)    # background crop side as a fraction of the image side


# ---------------------------------------------------------------------------------------------- data
class CropSampler:
    """Object and background crops of one split of a COCO-style dataset, held in memory as normalised images."""

    def __init__(self, data_root: str, split: str, mean, std, bgr_to_rgb: bool):
        from PIL import Image
        ann_file = osp.join(data_root, 'annotations', f'{split}.json')
        if not osp.isfile(ann_file):
            raise DataError(f'backbone pretraining: annotation file not found: {ann_file}')
        with open(ann_file) as f:
            coco = json.load(f)
        self.categories = sorted(c['id'] for c in coco['categories'])
        label_of = {cat: i for i, cat in enumerate(self.categories)}
        images = sorted(coco['images'], key=lambda im: im['id'])
        index_of = {im['id']: i for i, im in enumerate(images)}
        pixels = []
        for im in images:
            pixels.append(np.asarray(Image.open(osp.join(data_root, split, im['file_name'])).convert('RGB')))
        sizes = {a.shape for a in pixels}
        if len(sizes) != 1:
            raise DataError(f'backbone pretraining expects images of one size in {data_root}/{split}, got {sizes}')
        batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float()
        if not bgr_to_rgb:   # PIL reads RGB; a detector that keeps OpenCV's BGR order sees BGR: so does this
            batch = batch.flip(1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.images = ((batch - mean_t) / std_t).contiguous()
        self.height, self.width = self.images.shape[-2:]
        self.objects = np.array([(index_of[a['image_id']], *a['bbox'], label_of[a['category_id']])
                                 for a in coco['annotations'] if not a.get('iscrowd')], dtype=np.float64)
        if not len(self.objects):
            raise DataError(f'backbone pretraining: no annotated objects in {ann_file}')
        self.boxes_of = [self.objects[self.objects[:, 0] == i, 1:5] for i in range(len(images))]
        self.num_classes = len(self.categories) + 1   # + background

    def _object_rois(self, rng: random.Random, count: int):
        rois, labels = [], []
        for _ in range(count):
            image, x, y, w, h, label = self.objects[rng.randrange(len(self.objects))]
            side = max(w, h) * rng.uniform(*OBJECT_CONTEXT)
            cx = x + w / 2 + rng.uniform(-MAX_SHIFT, MAX_SHIFT) * side
            cy = y + h / 2 + rng.uniform(-MAX_SHIFT, MAX_SHIFT) * side
            rois.append((image, cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
            labels.append(int(label))
        return rois, labels

    def _background_rois(self, rng: random.Random, count: int):
        rois = []
        short = min(self.height, self.width)
        while len(rois) < count:
            image = rng.randrange(len(self.images))
            side = short * rng.uniform(*BACKGROUND_SIDE)
            x1, y1 = rng.uniform(0, self.width - side), rng.uniform(0, self.height - side)
            boxes = self.boxes_of[image]
            if len(boxes):
                ix = np.clip(np.minimum(x1 + side, boxes[:, 0] + boxes[:, 2]) - np.maximum(x1, boxes[:, 0]), 0, None)
                iy = np.clip(np.minimum(y1 + side, boxes[:, 1] + boxes[:, 3]) - np.maximum(y1, boxes[:, 1]), 0, None)
                covered = ix * iy / np.maximum(boxes[:, 2] * boxes[:, 3], 1e-6)
                if covered.max() >= BACKGROUND_MAX_COVER:
                    continue
            rois.append((image, x1, y1, x1 + side, y1 + side))
        return rois, [self.num_classes - 1] * count

    def batch(self, rng: random.Random, size: int, crop: int, background_fraction: float,
              flip: bool = True) -> Tuple[Tensor, Tensor]:
        from mmcv.ops import roi_align
        backgrounds = int(round(size * background_fraction))
        rois, labels = self._object_rois(rng, size - backgrounds)
        bg_rois, bg_labels = self._background_rois(rng, backgrounds)
        rois = torch.tensor(rois + bg_rois, dtype=torch.float32)
        crops = roi_align(self.images, rois, (crop, crop), 1.0, 2, 'avg', True)
        if flip:
            flips = torch.tensor([rng.random() < 0.5 for _ in range(len(rois))])
            crops[flips] = crops[flips].flip(-1)
        return crops, torch.tensor(labels + bg_labels)


# ---------------------------------------------------------------------------------------------- model
class BackboneClassifier(nn.Module):
    """The backbone, global average pooling of its last output, and a linear classifier."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.backbone(x)
        last = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return self.fc(last.mean(dim=(2, 3)))


def build_backbone(model_cfg: Mapping) -> nn.Module:
    """The detector config's backbone, without its ``init_cfg`` (it would load the file we are making)."""
    from distill_core.model_config import build_in_mmdet_scope
    cfg = dict(model_cfg['backbone'])
    cfg.pop('init_cfg', None)
    backbone = build_in_mmdet_scope(cfg)
    with quiet_mmengine():
        backbone.init_weights()
    return backbone


def backbone_arch(model_cfg: Mapping) -> Dict[str, Any]:
    """What identifies the architecture in the checkpoint's metadata (for the error on a mismatch)."""
    cfg = {k: v for k, v in dict(model_cfg['backbone']).items() if k != 'init_cfg'}
    return json.loads(json.dumps(cfg, default=str, sort_keys=True))


def _lr_at(iteration: int, settings: PretrainSettings) -> float:
    if iteration < settings.warmup:
        return settings.lr * (iteration + 1) / settings.warmup
    progress = (iteration - settings.warmup) / max(1, settings.iterations - settings.warmup)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def crop_accuracy(model: nn.Module, crops: Tensor, labels: Tensor, batch: int = 128) -> float:
    model.eval()
    correct = sum(int((model(crops[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
                  for i in range(0, len(crops), batch))
    model.train()
    return correct / max(1, len(crops))


def pretrain_backbone(model_config: str, data_root: str, out: str,
                      settings: PretrainSettings = PretrainSettings(), log: Log = print,
                      label: Optional[str] = None) -> Dict[str, Any]:
    """Pretrain the backbone of the detector config ``model_config`` on ``data_root`` and write it to ``out``
    (atomically); returns the summary stored in the checkpoint's ``meta``."""
    from distill_core.checkpoint import save_atomic
    from distill_core.model_config import resolve_model_config
    tune_cpu_allocator()
    model_cfg = resolve_model_config(model_config, 'backbone pretraining')
    pre = model_cfg.get('data_preprocessor') or {}
    mean, std = pre.get('mean', (0.0, 0.0, 0.0)), pre.get('std', (1.0, 1.0, 1.0))
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    train = CropSampler(data_root, 'train', mean, std, bool(pre.get('bgr_to_rgb', False)))
    val = CropSampler(data_root, 'val', mean, std, bool(pre.get('bgr_to_rgb', False)))
    val_crops, val_labels = val.batch(random.Random(settings.seed + 1), settings.val_crops, settings.crop_size,
                                      settings.background_fraction, flip=False)
    backbone = build_backbone(model_cfg)
    with torch.no_grad():
        probe = backbone(torch.zeros(1, 3, settings.crop_size, settings.crop_size))
    channels = (probe[-1] if isinstance(probe, (tuple, list)) else probe).shape[1]
    model = BackboneClassifier(backbone, channels, train.num_classes)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    progress = ProgressLine(label or f'backbone {osp.basename(out)}', settings.iterations, log)
    running = None
    for iteration in range(settings.iterations):
        for group in optimizer.param_groups:
            group['lr'] = _lr_at(iteration, settings)
        crops, labels = train.batch(rng, settings.batch_size, settings.crop_size, settings.background_fraction)
        loss = nn.functional.cross_entropy(model(crops), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        running = value if running is None else 0.9 * running + 0.1 * value
        progress.update(iteration + 1, loss=running)
    accuracy = crop_accuracy(model, val_crops, val_labels)
    meta = dict(kind='detkds pretrained backbone', arch=backbone_arch(model_cfg), model_config=model_config,
                data_root=data_root, pretext=f'{train.num_classes}-way object/background crop classification',
                settings=asdict(settings), val_accuracy=round(accuracy, 4),
                chance_accuracy=round(float(np.bincount(val_labels.numpy()).max()) / len(val_labels), 4))
    save_atomic({'state_dict': backbone.state_dict(), 'meta': meta}, out)
    progress.finish(f'held-out crop accuracy {accuracy:.3f} (majority class {meta["chance_accuracy"]:.3f}): {out}')
    return meta
