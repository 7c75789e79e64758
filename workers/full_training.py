"""Full training and evaluation through mmengine's Runner: ``detkds-search train`` and ``detkds-search test``.

The same entry points serve plain detectors, distillers exported by a search and the published methods.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import os.path as osp
import sys
from typing import Dict, Mapping, Optional

from mmengine.config import Config

from distill_core.checkpoint import load_checkpoint_file, mismatches, state_dict_of
from distill_core.errors import CheckpointError, ConfigError, DataError
from distill_core.model_config import innermost_dataset, load_config, pipeline_loads_masks
from distill_core.shapes import require_instance_masks
from workers.allocator import tune_cpu_allocator

FINAL_CHECKPOINT = 'final.pth'


def prepare_config(config_path: str, work_dir: Optional[str] = None, launcher: str = 'none',
                   cfg_options: Optional[Mapping] = None) -> Config:
    """Load a training config, apply overrides and check that its datasets exist."""
    from distill_core import register_all_modules
    register_all_modules()   # DetectionDistiller, the losses and ops a config may name
    cfg = load_config(config_path)
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(config_path))[0])
    cfg.launcher = launcher
    cfg.setdefault('default_scope', 'mmdet')
    _list_form_genomes(cfg)
    return cfg


def _list_form_genomes(cfg: Config) -> None:
    """Rewrite hand-written ``genome=dict(terms={input: {...}})`` to the list form: mmengine's Runner logs the
    config with dict keys rendered as keyword arguments, and the knowledge input ``global`` is a Python keyword
    (the rendering fails with a syntax error before training starts)."""
    from distill_core.genome import Genome
    for entry in (cfg.get('model') or {}).get('distill_losses') or ():
        loss = entry.get('loss') if isinstance(entry, Mapping) else None
        genome = loss.get('genome') if isinstance(loss, Mapping) else None
        if isinstance(genome, Mapping) and isinstance(genome.get('terms'), Mapping):
            loss['genome'] = Genome.parse(genome).to_dict()


def _dataset_files(dataset: Mapping):
    """(annotation file, image folder) of a COCO-style dataset config, resolved against its data_root."""
    dataset = innermost_dataset(dataset)
    root = dataset.get('data_root', '') or ''
    ann = dataset.get('ann_file')
    img = (dataset.get('data_prefix') or {}).get('img', '')
    return (osp.join(root, ann) if ann else None), osp.join(root, img)


def check_datasets(cfg: Config, splits=('train_dataloader', 'val_dataloader', 'test_dataloader')) -> None:
    for split in splits:
        loader = cfg.get(split)
        if not loader or 'dataset' not in loader:
            continue
        ann, img = _dataset_files(loader['dataset'])
        if ann is not None and not osp.isfile(ann):
            raise DataError(f'{split}: annotation file not found: {ann} '
                            f'(generate the demo data with `detkds-search data shapes --out data/shapes`)')
        if img and not osp.isdir(img):
            raise DataError(f'{split}: image folder not found: {img}')
        if ann is not None and pipeline_loads_masks(innermost_dataset(loader['dataset']).get('pipeline')):
            require_instance_masks(ann)   # a box-only file would fail deep in mmdet with a bare KeyError


def _runner_class(quiet: bool):
    """mmengine's Runner, or one whose console shows warnings only (the config dump, hook list and per-iteration
    lines still go to the log file in the work folder)."""
    from mmengine.runner import Runner
    if not quiet:
        return Runner

    class QuietRunner(Runner):
        def build_logger(self, *args, **kwargs):
            logger = super().build_logger(*args, **kwargs)
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    handler.setLevel(logging.WARNING)
            return logger

    return QuietRunner


def _progress_hook(label: str, log, prefix: str = '[prepare]'):
    """A hook printing ``ProgressLine`` lines and the validation AP."""
    from mmengine.hooks import Hook

    from workers.progress import ProgressLine

    class ProgressLineHook(Hook):
        priority = 'VERY_LOW'

        def __init__(self):
            self.progress = None
            self.result = 'no validation'

        def before_train(self, runner):
            self.progress = ProgressLine(label, runner.max_iters, log, prefix=prefix)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            loss = (outputs or {}).get('loss')
            self.progress.update(runner.iter + 1, loss=None if loss is None else float(loss.detach()))

        def after_val_epoch(self, runner, metrics=None):
            shown = {k.split('/')[-1]: v for k, v in (metrics or {}).items()
                     if k.endswith(('bbox_mAP', 'bbox_mAP_50', 'segm_mAP'))}
            if shown:
                self.result = ', '.join(f'val {k} {float(v):.3f}' for k, v in shown.items())
                log(f'{prefix} {label}: iteration {runner.iter}: {self.result}')

        def after_train(self, runner):
            self.progress.finish(self.result)

    return ProgressLineHook()


def _divergence_hook(interval: int = 10):
    """A hook stopping the run with ``TrainingError`` at the first checked iteration whose loss is not finite, naming
    the non-finite loss terms: a NaN gradient corrupts every weight in one step, and training the remaining
    iterations would only end in a checkpoint of NaNs and an AP of nan. Checked every ``interval`` iterations
    (a float() of the loss synchronises a GPU)."""
    import math

    from mmengine.hooks import Hook

    from distill_core.errors import TrainingError

    class DivergenceHook(Hook):
        priority = 'LOW'

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            loss = (outputs or {}).get('loss')
            if loss is None or (runner.iter + 1) % interval or math.isfinite(float(loss)):
                return
            terms = [f'{k} = {float(v):.4g}' for k, v in outputs.items()
                     if k.startswith('loss') and k != 'loss' and not math.isfinite(float(v))]
            raise TrainingError(f'training diverged by iteration {runner.iter + 1}: loss = {float(loss)}'
                                f'{" (" + ", ".join(terms) + ")" if terms else ""}; stopped, no final checkpoint '
                                f'written (log in {runner.work_dir})')

    return DivergenceHook()


@contextlib.contextmanager
def _console_to_log(work_dir: str, quiet: bool):
    """Quiet: what the libraries print (pycocotools' dataset loading and AP tables) goes to console.log in the
    work folder. Yields the console the caller printed to, where progress lines still go."""
    console = sys.stdout
    if not quiet:
        yield console
        return
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, 'console.log'), 'a') as sink, contextlib.redirect_stdout(sink):
        yield console


def train(config_path: str, work_dir: Optional[str] = None, launcher: str = 'none',
          cfg_options: Optional[Mapping] = None, resume: bool = False,
          progress: Optional[Mapping] = None) -> str:
    """Train with mmengine's Runner; returns the path of ``<work_dir>/final.pth`` (the last checkpoint).

    ``progress=dict(label=..., log=..., prefix='[prepare]')``: a quiet run (console: warnings and one progress line per tenth of
    the schedule with its ETA, then the validation AP; the full log stays in the work folder)."""
    tune_cpu_allocator()
    cfg = prepare_config(config_path, work_dir, launcher, cfg_options)
    check_datasets(cfg, ('train_dataloader', 'val_dataloader'))
    cfg.resume = bool(resume)
    if resume:
        # Resuming re-reads the runner's own full checkpoints (optimizer, message hub) from --work-dir, which
        # torch's weights_only loader refuses; they are files this tool wrote, so load them in full.
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    runner = _runner_class(quiet=progress is not None).from_cfg(cfg)
    with _console_to_log(cfg.work_dir, progress is not None) as console:
        if progress is not None:
            log = progress['log']

            def to_console(line: str) -> None:
                with contextlib.redirect_stdout(console):
                    log(line)

            runner.register_hook(_progress_hook(**dict(progress, log=to_console)))
        runner.register_hook(_divergence_hook())
        runner.train()
    last_file = osp.join(cfg.work_dir, 'last_checkpoint')
    if not osp.isfile(last_file):
        raise CheckpointError(f'training finished but no checkpoint was written in {cfg.work_dir} '
                              '(is a CheckpointHook configured?)')
    with open(last_file) as f:
        last = f.read().strip()
    final = osp.join(cfg.work_dir, FINAL_CHECKPOINT)
    if runner.rank == 0:
        write_weights_only(last, final)
    return final


def write_weights_only(runner_checkpoint: str, out: str) -> None:
    """``final.pth``: the weights and plain metadata of the runner's last checkpoint.

    The runner's own file also pickles its message hub and optimizer state, which ``torch.load`` refuses
    under ``weights_only=True``; the final checkpoint must load anywhere (as a teacher, in ``test``, in
    MMDetection's ``init_detector``), so it keeps only what a model needs. The runner's file was written by
    this process a moment ago, hence trusted.
    """
    import torch
    from distill_core.checkpoint import plain_meta, save_atomic
    ckpt = torch.load(runner_checkpoint, map_location='cpu', weights_only=False)
    save_atomic({'state_dict': ckpt['state_dict'], 'meta': plain_meta(ckpt.get('meta') or {})}, out)


def test(config_path: str, checkpoint: str, work_dir: Optional[str] = None, launcher: str = 'none',
         cfg_options: Optional[Mapping] = None, out: Optional[str] = None, quiet: bool = False) -> Dict[str, float]:
    """Evaluate a checkpoint with the config's test evaluator (COCO bbox AP through pycocotools, and mask AP
    (``coco/segm_mAP``...) beside it where the evaluator asks for ``segm``). ``quiet``: the console shows warnings
    only; mmengine's log and pycocotools' tables go to the work folder (``console.log`` and the run's log)."""
    cfg = prepare_config(config_path, work_dir, launcher, cfg_options)
    check_datasets(cfg, ('test_dataloader',))
    if not cfg.get('test_dataloader') or not cfg.get('test_evaluator'):
        raise ConfigError(f'{config_path} has no test_dataloader / test_evaluator')
    runner = _runner_class(quiet).from_cfg(cfg)
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    state = state_dict_of(load_checkpoint_file(checkpoint, 'test'))
    missing, _unexpected, wrong = mismatches(model, state)
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing or wrong:
        example = (missing or wrong)[0]
        raise CheckpointError(f'checkpoint {checkpoint} does not match {config_path}: {len(missing)} missing and '
                              f'{len(wrong)} shape-mismatched tensors (e.g. {example})')
    model.load_state_dict(state, strict=False)   # already read and checked above: no second read
    with _console_to_log(cfg.work_dir, quiet):
        metrics = {k: float(v) for k, v in runner.test().items()}
    if out:
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        tmp = out + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
        os.replace(tmp, out)
    return metrics


def use_data_root(cfg: Config, data_root: str) -> Config:
    """Point every dataloader and COCO evaluator of a shapes/COCO-style config at another data root."""
    data_root = data_root.rstrip('/') + '/'
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        dataset = loader['dataset']
        while 'dataset' in dataset:   # wrappers (RepeatDataset, ...)
            dataset = dataset['dataset']
        dataset['data_root'] = data_root
        evaluator = cfg.get(f'{split}_evaluator')
        if split != 'train' and evaluator and evaluator.get('ann_file'):
            evaluator['ann_file'] = osp.join(data_root, dataset['ann_file'])
    return cfg
