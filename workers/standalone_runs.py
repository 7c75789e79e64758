"""Standalone evaluation runs, each one Ray task whose result the controller records as a trial: the baselines a
search measures before its first trial (search/baselines.py) and the runs of a proxy-fidelity measurement
(search/fidelity.py).

* ``proxy``: a distiller (a genome, a published method's losses, or none) trained under one proxy setting and seed
  (``workers.proxy.run_proxy_trial``), fitness its proxy AP, with its curve;
* ``reference``: the member's full training (a training config written by the controller, trained with
  mmengine's Runner and tested on the val split by pycocotools), or a longer proxy;
* ``gradient_alignment``: a training-free score. On a few training batches at initialisation, the cosine between
  the gradient of the member's distillation loss and the gradient of the detection loss on the student's
  parameters, averaged over the batches. KD-Zero and DisWOT rank candidates by cheap signals of this kind;
  a distiller that pulls the student the way the task does should help. Members with no distillation loss
  score 0 (no pull at all).

A candidate rejected as degenerate (``TrialRejected``) is a result, not a crash: ``run_standalone_task`` returns
``ok=False`` with the reason and AP 0, what the search would rank it.
"""
from __future__ import annotations

import os
import os.path as osp
import time
from typing import Any, Dict, List, Mapping, Optional

import torch


def _distill_names(model) -> List[str]:
    return sorted({name for name, _level, _key in model._plan})


def gradient_alignment(search_cfg: Mapping, genome: Optional[str], seed: int, base_dir: str = '.',
                       distill_losses: Optional[List[Mapping]] = None, batches: int = 4) -> Dict[str, float]:
    """Mean cosine between the distillation and the detection gradients on the student's parameters."""
    from workers.progress import quiet_mmengine
    from workers.proxy import build_distiller
    from workers.rng import seed_everything
    from workers.proxy_data import ProxyData
    from workers.settings import check_search_config
    settings = check_search_config(search_cfg)
    with quiet_mmengine():
        data = ProxyData(search_cfg, settings, base_dir)
        seed_everything(seed)
        model = build_distiller(search_cfg, genome, settings, base_dir, distill_losses)
    model.train()
    prefixes = tuple(f'loss_{name}' for name in _distill_names(model))
    params = [p for p in model.student.parameters() if p.requires_grad]
    stream = data.train_batches(seed)
    cosines, ratios = [], []
    for _ in range(batches):
        batch = model.data_preprocessor(next(stream), True)
        losses = model.loss(batch['inputs'], batch['data_samples'])
        distill = {k: v for k, v in losses.items() if k.startswith(prefixes)}
        detect = {k: v for k, v in losses.items() if not k.startswith(prefixes)}
        detect_total, _ = model.parse_losses(detect)
        if not distill:
            cosines.append(0.0)
            continue
        distill_total, _ = model.parse_losses(distill)
        g_det = _flat_grad(detect_total, params, retain=True)
        g_kd = _flat_grad(distill_total, params, retain=False)
        norm = float(g_det.norm() * g_kd.norm())
        cosines.append(float(g_det @ g_kd) / norm if norm > 0 else 0.0)
        ratios.append(float(g_kd.norm() / g_det.norm().clamp_min(1e-12)))
    return dict(score=sum(cosines) / len(cosines), batches=float(len(cosines)),
                gradient_norm_ratio=sum(ratios) / len(ratios) if ratios else 0.0)


def _flat_grad(total: torch.Tensor, params, retain: bool) -> torch.Tensor:
    if not total.requires_grad:
        return torch.zeros(sum(p.numel() for p in params))
    grads = torch.autograd.grad(total, params, retain_graph=retain, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def train_reference(config_path: str, work_dir: str, label: str, log=print) -> Dict[str, float]:
    """Full training of a written training config, then its val-split metrics (pycocotools)."""
    from workers.full_training import FINAL_CHECKPOINT, test, train
    final = osp.join(work_dir, FINAL_CHECKPOINT)
    if not osp.isfile(final):   # a reference killed after training but before testing keeps its weights
        final = train(config_path, work_dir=work_dir,
                      progress=dict(label=label, log=log, prefix='[fidelity]'))
    return test(config_path, final, work_dir=osp.join(work_dir, 'test'), out=osp.join(work_dir, 'metrics.json'))


def run_standalone_task(task: Mapping[str, Any], base_dir: str, threads: int = 1, log=print) -> Dict[str, Any]:
    """One planned run; returns ``dict(ok, value, metrics, seconds, reason, curve)``. ``value`` is the AP (proxy or
    reference) or the training-free score; ``curve`` the proxy's reports (iteration, loss terms, AP)."""
    from workers.proxy import TrialRejected, run_proxy_trial
    torch.set_num_threads(max(1, int(threads)))
    started = time.time()
    kind, seed = task['kind'], int(task['seed'])
    losses = task.get('distill_losses')
    curve: List[Dict[str, float]] = []
    try:
        if kind == 'gradient_alignment':
            metrics = gradient_alignment(task['search_cfg'], task.get('genome'), seed, base_dir, losses,
                                         int(task.get('batches', 4)))
            value = metrics['score']
        elif kind == 'reference' and task.get('config'):
            os.chdir(base_dir)   # the training config names data, teacher and backbone relative to the search
            metrics = train_reference(task['config'], task['work_dir'], task['label'], log)
            value = metrics.get('coco/bbox_mAP', metrics.get('bbox_mAP'))
            metrics = {k.split('/')[-1]: v for k, v in metrics.items()}
        else:   # a proxy run, or a longer proxy as the reference
            result = run_proxy_trial(task['search_cfg'], task.get('genome'), seed, base_dir=base_dir,
                                     distill_losses=losses, teacher_cache_dir=task.get('teacher_cache_dir'),
                                     expected_trials=int(task.get('expected_trials', 1)))
            metrics = dict(result.metrics)
            value = metrics['AP']
            curve = [{k: float(v) for k, v in row.items() if isinstance(v, (int, float))} for row in result.history]
    except TrialRejected as exc:
        return dict(ok=False, rejected=True, value=0.0, metrics={}, seconds=time.time() - started,
                    reason=exc.reason, curve=[])
    return dict(ok=True, value=float(value), metrics={k: float(v) for k, v in metrics.items()},
                seconds=time.time() - started, reason='', curve=curve)
