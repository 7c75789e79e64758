"""Teacher feature cache of the proxy training subset: the frozen teacher's FPN features of every proxy training
image, computed once per search and memory-mapped by every trial instead of running the teacher each step.

Exact where it is used: the teacher is frozen in eval mode (no batch statistics), so an image's features do not
depend on the rest of its batch as long as every image gives the same padded input shape; the only randomness a
cached pipeline may have is a horizontal ``RandomFlip``, and both flip states are cached (row ``[image, flip]``),
picked per sample from its own ``flip`` flag. Anything else random (RandomResize, RandomCrop,
PhotoMetricDistortion, batch augments) makes the proxy ineligible (``cache_eligibility`` says why).

Layout of a cache folder ``<cache_dir>/<key>/``: per FPN level ``fpn<l>.npy``, float32 ``[num_images, 2, C, H, W]``,
and ``index.json`` (the key, the image ids in row order, the padded input shape, the levels' shapes). The key is a
hash of everything the features depend on (``cache_key``), so a changed teacher, checkpoint, subset, pipeline or
preprocessor gets a new folder and never reads stale features. The first trial that needs the cache builds it
under an exclusive ``flock`` into a temporary folder renamed into place (a crash never leaves a folder that looks
complete); the others wait on the lock and memory-map the result read-only.

``proxy.teacher_cache``: ``'auto'`` (default) uses the cache where it pays (``decide``: the teacher forwards the
search saves exceed the build's two forwards per image), ``True`` always (a ConfigError where ineligible),
``False`` never; ``proxy.teacher_cache_max_gb`` bounds its size.
"""
from __future__ import annotations

import copy
import glob
import hashlib
import json
import logging
import math
import os
import os.path as osp
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from distill_core.errors import ConfigError, DetKDSError
from workers.settings import ProxySettings, file_lock, resolve_path

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
FLIP_STATES = 2                 # row 0: as loaded, row 1: horizontally flipped
KEY_CHARS = 24                  # hex characters of the key naming a cache folder
INDEX_FILE = 'index.json'
# transforms whose output is a function of the image alone; RandomFlip is handled separately (both states cached)
DETERMINISTIC_TRANSFORMS = frozenset({'LoadImageFromFile', 'LoadAnnotations', 'Resize', 'FixShapeResize', 'Pad',
                                      'PackDetInputs'})
SHAPE_TRANSFORMS = frozenset({'Resize', 'FixShapeResize', 'Pad'})   # the ones that change the image's shape


# ---------------------------------------------------------------------------------------------- eligibility
@dataclass(frozen=True)
class CacheLayout:
    """What a cache holds: ``num_images`` x 2 flip states x one [C, H, W] per teacher level."""
    num_images: int
    padded_shape: Tuple[int, int]
    level_shapes: Tuple[Tuple[int, int, int], ...]

    @property
    def nbytes(self) -> int:
        return self.num_images * FLIP_STATES * sum(c * h * w for c, h, w in self.level_shapes) * 4


class Eligibility(NamedTuple):
    eligible: bool
    reason: str                           # why not, or a one-line description of the cache when eligible
    layout: Optional[CacheLayout] = None  # set when eligible


def _transform_name(transform: Mapping) -> str:
    kind = transform.get('type')
    return kind if isinstance(kind, str) else getattr(kind, '__name__', repr(kind))


def pipeline_obstacle(pipeline: Sequence[Mapping]) -> Optional[str]:
    """Why the proxy train pipeline cannot be cached (a random or unknown transform), or None."""
    has_flip = False
    for transform in pipeline:
        name = _transform_name(transform)
        if name == 'RandomFlip':
            direction = transform.get('direction', 'horizontal')
            directions = [direction] if isinstance(direction, str) else list(direction)
            if directions != ['horizontal']:
                return (f'RandomFlip(direction={direction!r}) in the proxy train pipeline: only horizontal flips '
                        'are cached')
            has_flip = True
        elif name not in DETERMINISTIC_TRANSFORMS:
            return (f'{name} in the proxy train pipeline (random or not known to be deterministic; only '
                    f'{", ".join(sorted(DETERMINISTIC_TRANSFORMS))} and a horizontal RandomFlip can be cached)')
    for transform in pipeline:
        meta_keys = transform.get('meta_keys') if _transform_name(transform) == 'PackDetInputs' else None
        needed = {'img_id'} | ({'flip', 'flip_direction'} if has_flip else set())
        if meta_keys is not None and not needed <= set(meta_keys):
            return (f'PackDetInputs.meta_keys of the proxy train pipeline lacks {sorted(needed - set(meta_keys))} '
                    '(the cache looks samples up by image id and flip flag)')
    return None


def _train_image_sizes(ann_file: str, img_ids: Sequence[int],
                       images: Optional[Mapping[int, Mapping]] = None) -> List[Tuple[int, int]]:
    """(height, width) of each proxy training image (no image is decoded), from ``images`` (COCO image records
    by id, e.g. ``pycocotools.COCO(ann_file).imgs`` the trial already loaded) or else the annotation file."""
    if images is None:
        with open(ann_file) as f:
            images = {image['id']: image for image in json.load(f)['images']}
    return [(int(images[img_id]['height']), int(images[img_id]['width'])) for img_id in img_ids]


def _padded_shapes(pipeline: Sequence[Mapping], sizes: Sequence[Tuple[int, int]], pad_divisor: int
                   ) -> Dict[Tuple[int, int], Tuple[int, int]]:
    """The network input shape (after the pipeline's resize/pad and the preprocessor's divisor padding) of each
    distinct image size, by running the pipeline's own shape transforms on a blank image of that size."""
    from mmdet.registry import TRANSFORMS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        transforms = [TRANSFORMS.build(copy.deepcopy(dict(t))) for t in pipeline
                      if _transform_name(t) in SHAPE_TRANSFORMS]
    shapes = {}
    for size in set(sizes):
        results = dict(img=np.zeros((*size, 3), dtype=np.uint8), img_shape=size, ori_shape=size)
        for transform in transforms:
            results = transform(results)
        h, w = results['img'].shape[:2]
        shapes[size] = (math.ceil(h / pad_divisor) * pad_divisor, math.ceil(w / pad_divisor) * pad_divisor)
    return shapes


@torch.no_grad()
def _teacher_level_shapes(model, padded_shape: Tuple[int, int]) -> Tuple[Tuple[int, int, int], ...]:
    device = next(model.teacher.parameters()).device
    feats = model.teacher.extract_feat(torch.zeros(1, 3, *padded_shape, device=device))
    return tuple(tuple(int(d) for d in f.shape[1:]) for f in feats)


def cache_eligibility(data, model, max_gb: float, images: Optional[Mapping[int, Mapping]] = None) -> Eligibility:
    """Can the teacher features of ``data``'s proxy training subset (``ProxyData``) be cached exactly for
    ``model`` (a ``DetectionDistiller``: its preprocessor and teacher), within ``max_gb`` GB? ``images``: the
    annotation file's image records by id when already loaded (else it is read for the image sizes)."""
    pipeline = data.dataset_cfg['pipeline']
    obstacle = pipeline_obstacle(pipeline)
    if obstacle:
        return Eligibility(False, obstacle)
    preprocessor = model.data_preprocessor
    if getattr(preprocessor, 'batch_augments', None):
        return Eligibility(False, 'the student data_preprocessor has batch_augments (random, per batch)')
    img_ids = data.train_img_ids
    sizes = _train_image_sizes(data.ann_file, img_ids, images)
    shapes = _padded_shapes(pipeline, sizes, int(getattr(preprocessor, 'pad_size_divisor', 1) or 1))
    distinct = sorted(set(shapes.values()))
    if len(distinct) > 1:
        examples = {}
        for img_id, size in zip(img_ids, sizes):
            examples.setdefault(shapes[size], img_id)
        listed = ', '.join(f'{shape} (image {examples[shape]})' for shape in distinct[:3])
        return Eligibility(False, f'the proxy training images give {len(distinct)} different padded input shapes '
                                  f'({listed}{", ..." if len(distinct) > 3 else ""}): a per-image cache needs one')
    layout = CacheLayout(len(img_ids), distinct[0], _teacher_level_shapes(model, distinct[0]))
    size_gb = layout.nbytes / 1e9
    if size_gb > max_gb:
        return Eligibility(False, f'the cache would take {size_gb:.3g} GB > proxy.teacher_cache_max_gb = {max_gb:g} '
                                  f'({layout.num_images} images x {FLIP_STATES} flips x {len(layout.level_shapes)} '
                                  'levels, float32)')
    return Eligibility(True, f'{layout.num_images} images x {FLIP_STATES} flips at {layout.padded_shape}, '
                             f'{size_gb * 1e3:.3g} MB', layout)


def decide(settings: ProxySettings, eligibility: Eligibility, teacher_runs: int) -> Tuple[bool, str]:
    """Build and use the cache? ``teacher_runs``: how many proxy runs (a group of one seed is one run) the search
    is expected to make. ``proxy.teacher_cache=True`` on an ineligible proxy is a ConfigError naming the reason."""
    setting = settings.teacher_cache
    if setting is False:
        return False, 'proxy.teacher_cache is False'
    if not eligibility.eligible:
        if setting is True:
            raise ConfigError(f'proxy.teacher_cache: True, but the teacher features cannot be cached: '
                              f'{eligibility.reason} (set proxy.teacher_cache to "auto" or False)')
        return False, f'not eligible: {eligibility.reason}'
    if setting is True:
        return True, f'proxy.teacher_cache is True ({eligibility.reason})'
    saved = teacher_runs * settings.iterations * settings.batch_size    # teacher image-forwards the cache replaces
    cost = FLIP_STATES * eligibility.layout.num_images                  # image-forwards of the build
    verdict = 'pays' if saved > cost else 'does not pay'
    return saved > cost, (f'{verdict}: {teacher_runs} run(s) x {settings.iterations} iterations x batch '
                          f'{settings.batch_size} = {saved} teacher image-forwards vs {cost} to build')


# ---------------------------------------------------------------------------------------------- the key
def _file_fingerprint(path: str) -> Dict[str, Any]:
    """Size, mtime and a hash of the first MB: a rewritten checkpoint or annotation file changes it."""
    stat = os.stat(path)
    with open(path, 'rb') as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return dict(path=osp.abspath(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns, head_sha256=head)


def cache_key(search_cfg: Mapping, data, base_dir: str = '.', precision: str = 'float32') -> str:
    """A hash of everything the cached features depend on: the resolved teacher config, the checkpoint file, the
    proxy training images (ids, annotation file, data root), the train pipeline, the student's data
    preprocessor (the teacher sees the student's preprocessed batch, re-normalised) and the precision of the
    teacher's forward (``DetectionDistiller.feature_precision``)."""
    from distill_core.model_config import load_config
    teacher_config = load_config(resolve_path(search_cfg['teacher']['config'], base_dir))
    student_config = load_config(resolve_path(search_cfg['student']['config'], base_dir))
    parts = dict(
        format=CACHE_FORMAT,
        teacher_config=teacher_config.to_dict(),
        checkpoint=_file_fingerprint(resolve_path(search_cfg['teacher']['checkpoint'], base_dir)),
        train_img_ids=list(data.train_img_ids),
        annotations=_file_fingerprint(data.ann_file),
        data_root=data.dataset_cfg.get('data_root'), data_prefix=data.dataset_cfg.get('data_prefix'),
        pipeline=data.dataset_cfg['pipeline'],
        data_preprocessor=student_config.model.get('data_preprocessor'))
    if precision != 'float32':   # float32 adds nothing, so that caches built before this part existed stay valid
        parts['precision'] = precision
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- the cache
class TeacherFeatureCache:
    """A built cache folder, memory-mapped read-only."""

    def __init__(self, folder: str):
        with open(osp.join(folder, INDEX_FILE)) as f:
            index = json.load(f)
        self.folder = folder
        self.key = index['key']
        self.img_ids = [int(i) for i in index['img_ids']]
        self.rows = {img_id: row for row, img_id in enumerate(self.img_ids)}
        self.padded_shape = tuple(index['padded_shape'])
        self.levels = [np.load(osp.join(folder, level['file']), mmap_mode='r') for level in index['levels']]
        self.built_here = False                 # this process built it
        self.build_seconds: Optional[float] = None
        self._temporary_root: Optional[str] = None

    def features(self, data_samples) -> Tuple[torch.Tensor, ...]:
        """The cached features of a batch's samples, stacked per level (CPU float32)."""
        rows, flips = [], []
        for sample in data_samples:
            meta = sample.metainfo
            img_id = int(meta['img_id'])
            if img_id not in self.rows:
                raise DetKDSError(f'teacher cache {self.folder}: image {img_id} is not in the cached proxy subset')
            flipped = bool(meta.get('flip', False))
            if flipped and meta.get('flip_direction') != 'horizontal':
                raise DetKDSError(f'teacher cache {self.folder}: image {img_id} flipped '
                                  f'{meta.get("flip_direction")!r}; only horizontal flips are cached')
            rows.append(self.rows[img_id])
            flips.append(int(flipped))
        rows, flips = np.asarray(rows), np.asarray(flips)
        return tuple(torch.from_numpy(level[rows, flips]) for level in self.levels)   # one gather per level

    @torch.no_grad()
    def teacher_outputs(self, head_model, batch: Mapping):
        """What ``head_model.teacher_forward(batch['inputs'])`` returns, with the features read from the cache."""
        from distill_core.distiller import TeacherOutputs
        inputs = batch['inputs']
        if tuple(inputs.shape[-2:]) != self.padded_shape:
            raise DetKDSError(f'teacher cache {self.folder}: batch input shape {tuple(inputs.shape[-2:])} differs '
                              f'from the cached {self.padded_shape}')
        feats = tuple(f.to(inputs.device, non_blocking=True) for f in self.features(batch['data_samples']))
        return TeacherOutputs(head_model.teacher_inputs(inputs), feats)

    def close(self) -> None:
        """Release the memory maps (and the folder, for a trial's private temporary cache)."""
        self.levels = []
        if self._temporary_root is not None:
            shutil.rmtree(self._temporary_root, ignore_errors=True)
            self._temporary_root = None


def _is_complete(folder: str) -> bool:
    return osp.isfile(osp.join(folder, INDEX_FILE))


def cache_folder(cache_dir: str, key: str) -> str:
    return osp.join(cache_dir, key[:KEY_CHARS])


def open_or_build(cache_dir: str, key: str, build: Callable[[str], None]) -> TeacherFeatureCache:
    """The cache of ``key`` under ``cache_dir``, built by ``build(folder)`` (which writes the level files and the
    index into an empty folder) when missing: once, under an exclusive lock, atomically renamed into place."""
    folder = cache_folder(cache_dir, key)
    if _is_complete(folder):   # a complete folder only ever appears by rename: no lock needed to read it
        return TeacherFeatureCache(folder)
    name = osp.basename(folder)
    os.makedirs(cache_dir, exist_ok=True)
    with file_lock(folder + '.lock'):
        if not _is_complete(folder):
            # a crashed build's leftovers: nobody else builds this key while we hold the lock
            for leftover in glob.glob(osp.join(cache_dir, f'.{name}.tmp-*')) + ([folder] if osp.exists(folder)
                                                                               else []):
                shutil.rmtree(leftover, ignore_errors=True)
            temporary = osp.join(cache_dir, f'.{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}')
            os.makedirs(temporary)
            start = time.perf_counter()
            try:
                build(temporary)
                os.rename(temporary, folder)
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                raise
            cache = TeacherFeatureCache(folder)
            cache.built_here, cache.build_seconds = True, time.perf_counter() - start
            return cache
    return TeacherFeatureCache(folder)   # another trial built it while we waited


def _fixed_flip_pipeline(pipeline: Sequence[Mapping], flipped: bool) -> List[dict]:
    """The train pipeline with its RandomFlip always (``flipped``) or never applied: same transform code."""
    return [dict(t, prob=1.0 if flipped else 0.0, direction='horizontal') if _transform_name(t) == 'RandomFlip'
            else dict(t) for t in pipeline]


def _build_features(folder: str, key: str, model, data, layout: CacheLayout, batch_size: int) -> None:
    """Write the teacher's features of every proxy training image, both flip states, and the index."""
    from mmengine.dataset import pseudo_collate
    from workers.rng import RngStreams   # the flip transform draws from numpy: leave the caller's streams alone
    files = [f'fpn{level}.npy' for level in range(len(layout.level_shapes))]
    arrays = [np.lib.format.open_memmap(osp.join(folder, name), mode='w+', dtype=np.float32,
                                        shape=(layout.num_images, FLIP_STATES, *shape))
              for name, shape in zip(files, layout.level_shapes)]
    img_ids = list(data.train_img_ids)
    with RngStreams(0).active():
        for flip in range(FLIP_STATES):
            dataset = data._build(dict(data.dataset_cfg, pipeline=_fixed_flip_pipeline(
                data.dataset_cfg['pipeline'], bool(flip))), data.train_indices)
            for start in range(0, layout.num_images, batch_size):
                stop = min(start + batch_size, layout.num_images)
                batch = model.data_preprocessor(pseudo_collate([dataset[i] for i in range(start, stop)]), True)
                got = [int(s.metainfo['img_id']) for s in batch['data_samples']]
                if got != img_ids[start:stop] or tuple(batch['inputs'].shape[-2:]) != layout.padded_shape:
                    raise DetKDSError(f'teacher cache build: images {got} at {tuple(batch["inputs"].shape[-2:])}, '
                                      f'expected {img_ids[start:stop]} at {layout.padded_shape}')
                feats = model.teacher_forward(batch['inputs']).feats
                for array, feat in zip(arrays, feats):
                    array[start:stop, flip] = feat.float().cpu().numpy()
    for array in arrays:
        array.flush()
    del arrays
    index = dict(format=CACHE_FORMAT, key=key, img_ids=img_ids, padded_shape=list(layout.padded_shape),
                 levels=[dict(file=name, shape=[layout.num_images, FLIP_STATES, *shape])
                         for name, shape in zip(files, layout.level_shapes)])
    with open(osp.join(folder, INDEX_FILE), 'w') as f:   # written last: the folder is renamed after it anyway
        json.dump(index, f)


def open_teacher_cache(search_cfg: Mapping, settings: ProxySettings, data, model, cache_dir: Optional[str],
                       teacher_runs: int = 1, base_dir: str = '.', images: Optional[Mapping[int, Mapping]] = None
                       ) -> Tuple[Optional[TeacherFeatureCache], str]:
    """The trial's teacher cache (opened, or built first) when it is to be used, else None; and why.

    ``data``: the trial's ``ProxyData``; ``model``: one of its ``DetectionDistiller`` s (teacher and
    preprocessor); ``cache_dir``: the search's cache folder (None: ``'auto'`` stays off, ``True`` builds a private
    temporary cache, removed by ``close()``); ``teacher_runs``: proxy runs the search is expected to make;
    ``images``: as for ``cache_eligibility``.

    A cache already built under the key is used as is (reading it is free; its inputs passed the eligibility
    check when it was built, whatever ``teacher_cache_max_gb`` says now); otherwise eligibility and ``decide``
    say whether to build it."""
    if settings.teacher_cache is False:
        return None, 'proxy.teacher_cache is False'
    if cache_dir is None and settings.teacher_cache == 'auto':
        return None, 'no teacher cache folder given'
    key = cache_key(search_cfg, data, base_dir, model.feature_precision)
    if cache_dir is not None and _is_complete(cache_folder(cache_dir, key)):
        return TeacherFeatureCache(cache_folder(cache_dir, key)), 'already built'
    eligibility = cache_eligibility(data, model, settings.teacher_cache_max_gb, images)
    use, reason = decide(settings, eligibility, teacher_runs)
    if not use:
        return None, reason
    temporary = tempfile.mkdtemp(prefix='detkds-teacher-cache-') if cache_dir is None else None
    cache = open_or_build(cache_dir or temporary, key, lambda folder: _build_features(
        folder, key, model, data, eligibility.layout, settings.eval_batch_size))
    cache._temporary_root = temporary
    if cache.built_here:
        reason += f'; built in {cache.build_seconds:.1f} s'
    logger.info('teacher cache %s: %s', cache.folder, reason)
    return cache, reason
