"""Global-Knowledge PGM: prototype generation (ECCV 2022, methods.md §6.3).

* ``box_mean_pool``: average-pool many inclusive integer boxes of a feature map at once (summed-area table).
* ``select_prototypes``: the coupled matching pursuit choosing K instances that best span both the student's
  and the teacher's instance features of one class at one level.
* ``GlobalKDPrototypeHook``: before each train epoch (and every ``interval`` iterations with iteration-based
  loops) pools instance features of a bounded, seeded sample of training images with the current student
  and the (cached) teacher, runs the matching pursuit per class and level, and hands the prototypes to
  every loss module that accepts them (``receive_prototypes``); also sets the KD attenuation factor.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.registry import HOOKS, TRANSFORMS
from mmengine.dataset import Compose, pseudo_collate
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop
from torch import Tensor

from ..errors import ConfigError


def box_mean_pool(feat: Tensor, batch_idx: Tensor, rows0: Tensor, rows1: Tensor, cols0: Tensor,
                  cols1: Tensor) -> Tensor:
    """Mean of ``feat[b, :, r0..r1, c0..c1]`` (inclusive, clipped to the map, at least one cell) per box.

    ``feat`` is ``N x C x H x W``; the index tensors have one entry per box. Returns ``B x C``.
    """
    n, c, h, w = feat.shape
    r0 = rows0.long().clamp(0, h - 1)
    r1 = torch.maximum(rows1.long().clamp(0, h - 1), r0)
    c0 = cols0.long().clamp(0, w - 1)
    c1 = torch.maximum(cols1.long().clamp(0, w - 1), c0)
    table = F.pad(feat.double().cumsum(2).cumsum(3), (1, 0, 1, 0))       # N x C x (H+1) x (W+1)
    b = batch_idx.long()
    total = (table[b, :, r1 + 1, c1 + 1] - table[b, :, r0, c1 + 1]
             - table[b, :, r1 + 1, c0] + table[b, :, r0, c0])
    count = ((r1 - r0 + 1) * (c1 - c0 + 1)).double().unsqueeze(1)
    return (total / count).to(feat.dtype)


def _density(unit: Tensor, sigma: float) -> Tensor:
    distance = 1 - unit @ unit.t()
    return torch.exp(-(distance / sigma) ** 2).sum(dim=1)


def select_prototypes(x_s: Tensor, x_t: Tensor, num_prototypes: int = 10, coupling: float = 10.0,
                      sigma: float = 0.1, quantile: float = 0.4) -> Tensor:
    """Indices (length ``num_prototypes``, repeats allowed) of the instances chosen as prototypes.

    Candidates are the instances whose density (sum of ``exp(-(d/sigma)^2)`` over cosine distances ``d``)
    exceeds the ``quantile`` of densities in both spaces (all instances if none does). Each round picks the
    candidate k minimising ``||x_s,k w_s' - R_s||^2 + ||x_t,k w_t' - R_t||^2 + coupling ||w_s - w_t||^2`` with
    the closed-form coupled coefficients, then removes its projection from both residuals.
    """
    if x_s.shape[0] != x_t.shape[0] or x_s.shape[0] == 0:
        raise ValueError(f'select_prototypes: need the same non-zero number of instances, got '
                         f'{x_s.shape[0]} and {x_t.shape[0]}')
    u_s = F.normalize(x_s.double(), dim=1)
    u_t = F.normalize(x_t.double(), dim=1)
    n = u_s.shape[0]
    d_s, d_t = _density(u_s, sigma), _density(u_t, sigma)
    thr_s, thr_t = d_s.sort().values[int(quantile * n)], d_t.sort().values[int(quantile * n)]
    candidates = torch.nonzero((d_s > thr_s) & (d_t > thr_t)).flatten()
    if candidates.numel() == 0:
        candidates = torch.arange(n)
    r_s, r_t = u_s.t().clone(), u_t.t().clone()                             # D x n residuals
    alpha = float(coupling)
    chosen = []
    for _ in range(num_prototypes):
        a = r_s.t() @ u_s[candidates].t()                                    # n x |candidates|
        b = r_t.t() @ u_t[candidates].t()
        w_s = (alpha * (a + b) + a) / (1 + 2 * alpha)
        w_t = (alpha * (a + b) + b) / (1 + 2 * alpha)
        # ||x w' - R||^2 = ||R||^2 - 2 w.(R'x) + ||w||^2 for a unit-norm x
        err = (r_s.pow(2).sum() - 2 * (w_s * a).sum(0) + w_s.pow(2).sum(0)
               + r_t.pow(2).sum() - 2 * (w_t * b).sum(0) + w_t.pow(2).sum(0)
               + alpha * (w_s - w_t).pow(2).sum(0))
        best = int(err.argmin())
        k = int(candidates[best])
        chosen.append(k)
        r_s = r_s - u_s[k].unsqueeze(1) @ w_s[:, best].unsqueeze(0)
        r_t = r_t - u_t[k].unsqueeze(1) @ w_t[:, best].unsqueeze(0)
    return torch.tensor(chosen, dtype=torch.long)


def sample_instances(dataset, num_classes: int, min_size: Tuple[float, float], max_images_per_class: int,
                     seed: int) -> Dict[int, List[Tuple[List[float], int]]]:
    """Per image index, the (box, label) pairs used for prototypes: boxes larger than ``min_size`` (w, h) in
    original pixels, at most ``max_images_per_class`` images per class, drawn with a seeded NumPy RNG."""
    per_class: Dict[int, Dict[int, list]] = {c: {} for c in range(num_classes)}
    for idx in range(len(dataset)):
        for inst in dataset.get_data_info(idx).get('instances', []):
            x1, y1, x2, y2 = inst['bbox']
            label = int(inst['bbox_label'])
            if inst.get('ignore_flag', 0) or not 0 <= label < num_classes:
                continue
            if x2 - x1 > min_size[0] and y2 - y1 > min_size[1]:
                per_class[label].setdefault(idx, []).append(([x1, y1, x2, y2], label))
    rng = np.random.RandomState(seed)
    chosen: Dict[int, list] = {}
    for label in range(num_classes):
        images = sorted(per_class[label])
        if len(images) > max_images_per_class:
            images = sorted(rng.choice(images, max_images_per_class, replace=False).tolist())
        for idx in images:
            chosen.setdefault(idx, []).extend(per_class[label][idx])
    return chosen


def _level_of_key(key: str) -> Optional[int]:
    match = re.search(r'_fpn(\d+)$', key)
    return int(match.group(1)) if match else None


@HOOKS.register_module()
class GlobalKDPrototypeHook(Hook):
    """Regenerate Global-Knowledge prototypes with the current student (teacher features are cached).

    Args:
        interval: with an iteration-based loop, regenerate every ``interval`` iterations (besides the start);
            with an epoch-based loop prototypes are regenerated before every epoch.
        max_images_per_class, min_size (w, h in original pixels), seed: the bounded instance sample.
        batch_size: images per batched feature pass. pipeline: a deterministic (test-time) pipeline; default:
            the val dataloader's.
        num_prototypes, coupling, sigma, quantile: matching-pursuit settings.
    """
    priority = 'NORMAL'

    def __init__(self, interval: Optional[int] = None, max_images_per_class: int = 800,
                 min_size: Sequence[float] = (30, 30), batch_size: int = 8, seed: int = 1,
                 pipeline: Optional[Sequence[dict]] = None, num_prototypes: int = 10, coupling: float = 10.0,
                 sigma: float = 0.1, quantile: float = 0.4):
        self.interval = interval
        self.max_images_per_class = int(max_images_per_class)
        self.min_size = tuple(float(v) for v in min_size)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.pipeline_cfg = pipeline
        self.mp_args = dict(num_prototypes=int(num_prototypes), coupling=coupling, sigma=sigma, quantile=quantile)
        self.generations = 0
        self._teacher_cache: Optional[Tuple[Tensor, ...]] = None
        self._instances = None

    # ------------------------------------------------------------------ runner events
    @staticmethod
    def _distiller(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    @staticmethod
    def _by_epoch(runner) -> bool:
        return not isinstance(runner.train_loop, IterBasedTrainLoop)

    def before_train_epoch(self, runner) -> None:
        if self._by_epoch(runner) or self.generations == 0:
            self.regenerate(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._by_epoch(runner):
            factor = 1.0 - runner.epoch / max(1, runner.max_epochs)
        else:
            factor = 1.0 - runner.iter / max(1, runner.max_iters)
            if self.interval and runner.iter > 0 and runner.iter % self.interval == 0:
                self.regenerate(runner)
        for module in self._consumers(self._distiller(runner)):
            module.set_attenuation(factor)

    def regenerate(self, runner) -> None:
        dataset = runner.train_dataloader.dataset
        pipeline = self.pipeline_cfg
        if pipeline is None:
            loader = runner.cfg.get('val_dataloader') or runner.cfg.get('test_dataloader')
            if not loader:
                raise ConfigError('GlobalKDPrototypeHook: set pipeline= or define val_dataloader in the config')
            pipeline = loader['dataset']['pipeline']
        self.generate(self._distiller(runner), dataset, pipeline)

    # ------------------------------------------------------------------ generation
    @staticmethod
    def _consumers(distiller):
        return [m for m in distiller.distill_losses.values() if hasattr(m, 'receive_prototypes')]

    def generate(self, distiller, dataset, pipeline: Sequence) -> None:
        """Compute prototypes with ``distiller``'s current student and frozen teacher on ``dataset``."""
        consumers = [(key, m) for key, m in distiller.distill_losses.items() if hasattr(m, 'receive_prototypes')]
        if not consumers:
            raise ConfigError('GlobalKDPrototypeHook: no loss in model.distill_losses uses prototypes '
                              '(GlobalKDLoss / GlobalKDSoftLabelLoss)')
        num_classes = consumers[0][1].num_classes
        if self._instances is None:
            self._instances = sample_instances(dataset, num_classes, self.min_size, self.max_images_per_class,
                                               self.seed)
        feats_s, feats_t, labels = self._instance_features(distiller, dataset, pipeline)
        num_levels = len(feats_s)
        k = self.mp_args['num_prototypes']
        protos_s = [torch.zeros(num_classes, k, f.shape[1]) for f in feats_s]
        protos_t = [torch.zeros(num_classes, k, f.shape[1]) for f in feats_t]
        valid = torch.zeros(num_classes, dtype=torch.bool)
        for label in range(num_classes):
            members = torch.nonzero(labels == label).flatten()
            if members.numel() == 0:
                continue
            valid[label] = True
            for level in range(num_levels):
                idx = members[select_prototypes(feats_s[level][members], feats_t[level][members], **self.mp_args)]
                protos_s[level][label] = feats_s[level][idx].float()   # raw (unnormalised) pooled features
                protos_t[level][label] = feats_t[level][idx].float()
        for key, module in consumers:
            module.receive_prototypes(_level_of_key(key), protos_s, protos_t, valid)
        self.generations += 1

    def _instance_features(self, distiller, dataset, pipeline):
        """Pooled instance features per level (student raw neck, teacher neck) for the sampled instances."""
        transforms = Compose([TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline])
        images = sorted(self._instances)
        student = distiller.student
        was_training = student.training
        student.eval()
        feats_s: List[List[Tensor]] = []
        feats_t: List[List[Tensor]] = []
        labels: List[Tensor] = []
        try:
            with torch.no_grad():
                for start in range(0, len(images), self.batch_size):
                    batch_ids = images[start:start + self.batch_size]
                    items = [transforms(dict(dataset.get_data_info(i))) for i in batch_ids]
                    data = distiller.data_preprocessor(pseudo_collate(items), False)
                    inputs, samples = data['inputs'], data['data_samples']
                    boxes, batch_idx, box_labels = [], [], []
                    for b, (idx, sample) in enumerate(zip(batch_ids, samples)):
                        scale = sample.metainfo.get('scale_factor', (1.0, 1.0))
                        pairs = self._instances[idx]
                        raw = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
                        boxes.append(raw * torch.tensor([scale[0], scale[1], scale[0], scale[1]]))
                        batch_idx.append(torch.full((len(pairs),), b))
                        box_labels.append(torch.tensor([p[1] for p in pairs]))
                    boxes, batch_idx = torch.cat(boxes).to(inputs.device), torch.cat(batch_idx).to(inputs.device)
                    labels.append(torch.cat(box_labels))
                    pad_h, pad_w = inputs.shape[-2:]
                    s_levels = student.extract_feat(inputs)
                    feats_s.append([self._pool(f, boxes, batch_idx, pad_h, pad_w) for f in s_levels])
                    if self._teacher_cache is None:
                        t_levels = distiller.teacher.extract_feat(distiller.teacher_inputs(inputs))
                        feats_t.append([self._pool(f, boxes, batch_idx, pad_h, pad_w) for f in t_levels])
        finally:
            student.train(was_training)
        num_levels = len(feats_s[0])
        stacked_s = [torch.cat([batch[l] for batch in feats_s]).cpu() for l in range(num_levels)]
        if self._teacher_cache is None:   # the teacher is frozen and the sample fixed: pool it once
            self._teacher_cache = tuple(torch.cat([batch[l] for batch in feats_t]).cpu() for l in range(num_levels))
        return stacked_s, list(self._teacher_cache), torch.cat(labels)

    @staticmethod
    def _pool(feat: Tensor, boxes: Tensor, batch_idx: Tensor, pad_h: int, pad_w: int) -> Tensor:
        # box scaled by (feat/pad), truncated to int, inclusive crop (the reference's rule)
        h, w = feat.shape[-2:]
        sx, sy = w / pad_w, h / pad_h
        return box_mean_pool(feat, batch_idx, (boxes[:, 1] * sy).long(), (boxes[:, 3] * sy).long(),
                             (boxes[:, 0] * sx).long(), (boxes[:, 2] * sx).long())
