"""The proxy task's data: two disjoint subsets of the student config's TRAINING annotations.

``train_images`` train the candidate (the student's train pipeline, random flip included) and ``val_images``
measure its fitness (the student's test pipeline on those training images): the search never looks at the
val split, which stays for final reporting (detkds.md defect 31). Both subsets are drawn with
``proxy.subset_seed``, so every trial of a search sees the same images; batches are drawn with the trial's
seed, so a trial is reproducible.
"""
from __future__ import annotations

import copy
import os.path as osp
from functools import partial
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from distill_core.errors import ConfigError, DataError
from distill_core.model_config import has_mask_head, pipeline_loads_masks
from distill_core.shapes import require_instance_masks
from workers.settings import ProxySettings, proxy_data_root, resolve_path
from workers.proxy_eval import quiet_stdout


def subset_size(spec: Union[int, float], num_images: int) -> int:
    """An image count from a count (int) or a fraction (float in (0, 1)) of ``num_images``; at least 1."""
    if isinstance(spec, float):
        return max(1, int(round(spec * num_images)))
    return int(spec)


def draw_subsets(num_images: int, train_spec: Union[int, float], val_spec: Union[int, float],
                 seed: int, source: str = 'the training annotations') -> Tuple[List[int], List[int]]:
    """Disjoint sorted index lists (train, val) into ``num_images`` items, drawn with ``seed``."""
    n_train, n_val = subset_size(train_spec, num_images), subset_size(val_spec, num_images)
    if n_train + n_val > num_images:
        raise ConfigError(f'proxy.train_images + proxy.val_images = {n_train} + {n_val} images, but {source} '
                          f'have only {num_images} (usable) images: the two subsets are disjoint')
    order = np.random.default_rng(seed).permutation(num_images)
    return sorted(order[:n_train].tolist()), sorted(order[n_train:n_train + n_val].tolist())


class SeededInfiniteSampler(Sampler):
    """Endless reshuffled passes over ``range(size)``, reproducible from ``seed`` (like mmengine's
    InfiniteSampler, without the distributed parts; a fresh iterator restarts the same sequence)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            yield from torch.randperm(self.size, generator=generator).tolist()

    def __len__(self) -> int:   # DataLoader asks; the sampler never ends
        return self.size


def _inner_dataset(dataset: Mapping, split: str) -> dict:
    """The dataset config under wrappers (RepeatDataset, ClassBalancedDataset): the proxy draws its own
    subsets, so repetition/balancing wrappers do not apply."""
    dataset = dict(dataset)
    while 'dataset' in dataset:
        dataset = dict(dataset['dataset'])
    if 'ann_file' not in dataset:
        raise ConfigError(f'student config {split}_dataloader.dataset has no ann_file (a COCO-style dataset '
                          'is required for the proxy)')
    return dataset


class ProxyData:
    """The proxy datasets of a search config (built once per trial: annotation JSON only, no images)."""

    def __init__(self, search_cfg: Mapping, settings: ProxySettings, base_dir: str = '.'):
        from distill_core.model_config import load_config
        self.settings = settings
        student_config = resolve_path(search_cfg['student']['config'], base_dir)
        cfg = load_config(student_config)
        if not cfg.get('train_dataloader'):
            raise ConfigError(f'student.config {student_config} has no train_dataloader')
        train_cfg = _inner_dataset(cfg.train_dataloader['dataset'], 'train')
        test_loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
        if not test_loader:
            raise ConfigError(f'student.config {student_config} has no test_dataloader (its test pipeline '
                              'evaluates the proxy)')
        self.test_pipeline = copy.deepcopy(_inner_dataset(test_loader['dataset'], 'test')['pipeline'])

        data_root = proxy_data_root(search_cfg, base_dir)
        if data_root is None:
            data_root = resolve_path(train_cfg.get('data_root') or '', base_dir)
        train_cfg['data_root'] = data_root.rstrip('/') + '/'
        ann_file = train_cfg['ann_file'] if osp.isabs(train_cfg['ann_file']) else osp.join(data_root,
                                                                                           train_cfg['ann_file'])
        if not osp.isfile(ann_file):
            raise DataError(f'proxy: training annotation file not found: {ann_file} (generate the demo data '
                            'with `detkds-search data shapes`, or set data.generate_shapes in the search config)')
        if settings.metric == 'segm' and not has_mask_head(cfg.model):
            raise ConfigError(f'proxy.metric = "segm" (mask AP) needs a student with a mask head; {student_config} '
                              f'({cfg.model.get("type")}) has none: use proxy.metric = "bbox"')
        if settings.metric == 'segm' or pipeline_loads_masks(train_cfg.get('pipeline')):
            require_instance_masks(ann_file)   # the masks trained on, or the ground truth of the mask AP
        self.ann_file = ann_file
        self.dataset_cfg = train_cfg

        full = self._build(train_cfg)
        self.num_images = len(full)
        self.img_ids = [full.get_data_info(i)['img_id'] for i in range(self.num_images)]
        self.cat_ids = list(full.cat_ids)
        self.train_indices, self.val_indices = draw_subsets(
            self.num_images, settings.train_images, settings.val_images, settings.subset_seed,
            f'the training annotations {ann_file}')

    @classmethod
    def describe(cls, search_cfg: Mapping, base_dir: str = '.') -> 'ProxyData':
        """Check that the proxy subsets can be drawn from the search's data (used before a launch)."""
        from workers.settings import check_search_config
        return cls(search_cfg, check_search_config(search_cfg), base_dir)

    @property
    def train_img_ids(self) -> List[int]:
        return [self.img_ids[i] for i in self.train_indices]

    @property
    def val_img_ids(self) -> List[int]:
        return [self.img_ids[i] for i in self.val_indices]

    @staticmethod
    def _build(dataset_cfg: Mapping, indices: Optional[Sequence[int]] = None):
        from mmdet.registry import DATASETS
        from mmengine.registry import DefaultScope
        cfg = copy.deepcopy(dict(dataset_cfg))
        if indices is not None:
            cfg['indices'] = list(indices)
        # pipeline transforms resolve in mmdet's scope; pycocotools prints while loading the annotations
        with DefaultScope.overwrite_default_scope('mmdet'), quiet_stdout():
            return DATASETS.build(cfg)

    def train_dataset(self):
        """The training subset with the student's train pipeline (random flip included)."""
        return self._build(self.dataset_cfg, self.train_indices)

    def val_dataset(self):
        """The held-out training images with the student's test pipeline (same filtering, hence same indices)."""
        return self._build(dict(self.dataset_cfg, pipeline=self.test_pipeline), self.val_indices)

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset, batch_size: int, seed: int, sampler=None, pin_memory: bool = False) -> DataLoader:
        from mmengine.dataset import pseudo_collate, worker_init_fn
        workers = self.settings.num_workers
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
            pin_memory=pin_memory, persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
            collate_fn=pseudo_collate, generator=torch.Generator().manual_seed(seed),
            # worker processes seed numpy/random (the random flip) from the trial seed
            worker_init_fn=partial(worker_init_fn, num_workers=workers, rank=0, seed=seed) if workers else None)

    def train_batches(self, seed: int, pin_memory: bool = False) -> Iterator[dict]:
        """Endless training batches of ``batch_size`` reshuffled every pass, reproducible from ``seed``
        (``pin_memory``: page-locked batches for a GPU trial; worker processes, when ``proxy.num_workers`` > 0,
        prefetch while the device trains)."""
        dataset = self.train_dataset()
        return iter(self._loader(dataset, self.settings.batch_size, seed, SeededInfiniteSampler(len(dataset), seed),
                                 pin_memory))

    def val_loader(self) -> DataLoader:
        return self._loader(self.val_dataset(), self.settings.eval_batch_size, 0)
