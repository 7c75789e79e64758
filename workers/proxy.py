"""One search trial: train a candidate distillation policy on the proxy task and measure its AP (box AP, or mask
AP with ``proxy.metric = 'segm'``; the other one beside it where the student has a mask head).

``run_proxy_trial`` builds the ``DetectionDistiller`` of the search config's teacher/student pair with the
genome's ``SearchedDistillLoss`` (or none: the student-alone baseline under the same proxy), trains it for
``proxy.iterations`` on the proxy training subset, reports every loss term every ``report_interval``
iterations and the proxy AP every ``eval_interval`` iterations and at the end, through the caller's
``report`` (Ray Tune's, for the controller; it may raise to stop the trial: that exception propagates).

A lean loop, no mmengine Runner: no hooks, logs, checkpoints or files. The fitness is returned in-process
(never parsed from a log, detkds.md defects 26-27). Degenerate candidates (a non-finite loss or gradient, an
exploding distillation term in the first ``reject.check_iterations`` iterations) raise ``TrialRejected``
before the optimizer step, at a fraction of a proxy's cost; any other exception propagates (a FAIL with its
text for the controller).

``run_proxy_group`` is the shared-teacher trial: K candidates trained in lockstep on the same batches, the batch
and the teacher forward computed once per step for all of them; each candidate keeps its own distiller state and
random streams, so a group reproduces K single trials with the same seeds. ``run_proxy_trial`` is a group of one.
On a GPU the backbone and neck forwards run under bfloat16 autocast (``proxy.amp``; the heads and losses at
full precision: ``DetectionDistiller.set_feature_autocast``) and batches come from pinned memory. Given a
search's ``teacher_cache_dir``, the teacher's features come from the search's teacher cache where it is eligible
and pays (``proxy.teacher_cache``, workers/teacher_cache.py) instead of a teacher forward per step.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch

from workers.allocator import tune_cpu_allocator
from workers.progress import quiet_mmengine
from workers.rng import RngStreams, seed_everything
from workers.settings import ProxySettings, check_search_config, resolve_path
from workers.proxy_data import ProxyData
from workers.proxy_eval import METRIC_KEYS, evaluate_detector, load_coco
from workers.teacher_cache import open_teacher_cache

if TYPE_CHECKING:
    from distill_core.genome import Genome

SEARCHED_LOSS_NAME = 'searched'
DISTILL_PREFIX = f'loss_{SEARCHED_LOSS_NAME}'

Report = Callable[[Dict[str, float]], None]


class TrialRejected(Exception):
    """A degenerate candidate, failed early; ``reason`` says why (e.g. 'non-finite loss_searched_bg at
    iteration 2')."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ProxyResult:
    # AP, AP50, AP75, APs, APm, APl in [0, 1] of proxy.metric (nan where COCO gives -1); a mask-head student adds
    # the other metric's as segm_AP, ... (or bbox_AP, ...)
    metrics: Dict[str, float]
    iterations: int                      # iterations trained (the failing one included)
    wall_time: float                     # seconds from the start of the run (a group's, in group mode)
    history: List[Dict[str, float]] = field(default_factory=list)   # every report made, in order
    failure: Optional[Exception] = None  # group mode: why this candidate stopped (metrics then empty)


# ---------------------------------------------------------------------------------------------- building
def distill_losses_for(genome) -> List[dict]:
    """The distiller's ``distill_losses`` for a genome (Genome, its JSON or dict), or none for ``None`` or a genome
    without terms (a strategy alone: a baseline's recipe, whose losses come separately)."""
    if genome is None:
        return []
    from distill_core.genome import Genome
    genome = Genome.parse(genome)
    if not genome.terms:
        return []
    return [dict(name=SEARCHED_LOSS_NAME, loss=dict(type='SearchedDistillLoss', genome=genome.to_json()))]


def training_strategy(genome, settings: ProxySettings):
    """The genome's training strategy (stage 2 searches it), else the proxy's: ``proxy.inherit_neck_head``,
    a constant distillation weight."""
    from distill_core.genome import Genome, TrainingStrategy
    strategy = Genome.parse(genome).strategy if genome is not None else None
    return strategy or TrainingStrategy(inherit_neck_head=settings.inherit_neck_head)


def build_distiller(search_cfg: Mapping, genome, settings: ProxySettings, base_dir: str = '.',
                    distill_losses: Optional[List[Mapping]] = None):
    """The initialised ``DetectionDistiller`` of a trial (teacher loaded, frozen and in eval mode), trained with
    the genome's strategy (``training_strategy``).

    ``distill_losses``: extra distiller loss entries (a published method's, for a baseline run)."""
    from distill_core.distiller import DetectionDistiller
    teacher = search_cfg['teacher']
    strategy = training_strategy(genome, settings)
    model = DetectionDistiller(
        teacher=dict(config=resolve_path(teacher['config'], base_dir),
                     checkpoint=resolve_path(teacher['checkpoint'], base_dir)),
        student=dict(config=resolve_path(search_cfg['student']['config'], base_dir)),
        inherit_neck_head=strategy.inherit_neck_head,
        distill_schedule=dict(warmup=strategy.warmup, decay=strategy.decay),
        level_pairing=settings.level_pairing,
        distill_losses=distill_losses_for(genome) + [dict(loss) for loss in distill_losses or ()])
    from distill_core.pretrained_backbone import relative_to
    with relative_to(base_dir):   # a relative pretrained-backbone path names a file under the search's folder
        model.init_weights()
    return model


def build_optim_wrapper(model: torch.nn.Module, settings: ProxySettings):
    """An mmengine OptimWrapper over the parameters that require grad (never the frozen teacher's)."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import OPTIMIZERS
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.build(dict(settings.optimizer, params=params))
    clip = dict(max_norm=float(settings.grad_clip), norm_type=2) if settings.grad_clip else None
    return OptimWrapper(optimizer, clip_grad=clip), params


# ---------------------------------------------------------------------------------------------- checks
def check_losses(values: Mapping[str, float], iteration: int, settings: ProxySettings) -> None:
    """Raise TrialRejected for a degenerate loss (called before the optimizer step). The terms are checked
    before the total, so the reason names the culprit term."""
    early = iteration <= settings.reject.check_iterations
    keys = sorted((k for k in values if 'loss' in k), key=lambda k: k == 'loss')   # 'loss' (the total) last
    for key in keys:
        value = values[key]
        if not math.isfinite(value):
            raise TrialRejected(f'non-finite {key} at iteration {iteration}')
        if early and key.startswith(DISTILL_PREFIX) and value > settings.reject.max_loss:
            raise TrialRejected(f'exploding {key} = {value:.4g} > reject.max_loss = {settings.reject.max_loss:g} '
                                f'at iteration {iteration}')


def _gradients_finite(params) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


# ---------------------------------------------------------------------------------------------- the trial
class _IntervalMeans:
    """Mean of each logged value since the last report."""

    def __init__(self):
        self.sums: Dict[str, float] = {}
        self.count = 0

    def add(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def pop(self) -> Dict[str, float]:
        means = {key: total / self.count for key, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


def feature_autocast_device(settings: ProxySettings, device: str) -> Optional[str]:
    """Where the proxy's backbone and neck forwards run under bfloat16 autocast: on a GPU that supports it when
    ``proxy.amp`` (no loss scaling needed); never on CPU, where bfloat16 convolutions are slower on most machines
    (tests run this path on CPU through ``DetectionDistiller.set_feature_autocast('cpu')``)."""
    if device == 'cuda' and settings.amp and torch.cuda.is_bf16_supported():
        return 'cuda'
    return None


class _Candidate:
    """One student of a group: its own distiller (sharing the group's teacher module), optimizer, random
    streams, reports and outcome."""

    def __init__(self, genome, seed: int, report: Optional[Report], model, settings: ProxySettings):
        self.genome, self.seed, self.report, self.model = genome, seed, report, model
        self.optim_wrapper, self.params = build_optim_wrapper(model, settings)
        self.base_lrs = [group['lr'] for group in self.optim_wrapper.param_groups]   # proxy.lr_steps scale them
        self.rng = RngStreams(seed)   # training randomness starts from the seed, whatever building consumed
        self.means = _IntervalMeans()
        self.history: List[Dict[str, float]] = []
        self.metrics: Optional[Dict[str, float]] = None
        self.failure: Optional[Exception] = None
        self.iterations = 0
        self.wall_time = 0.0

    def train_step(self, data: dict, teacher, iteration: int, settings: ProxySettings) -> None:
        """One step on the shared preprocessed batch and teacher outputs; the loss terms are checked before the
        update (a rejected candidate never updates)."""
        model = self.model
        model.set_distill_progress((iteration - 1) / settings.iterations)   # as a Runner counts: 0 at the start
        losses = model.loss(data['inputs'], data['data_samples'], teacher_outputs=teacher)
        total, log_vars = model.parse_losses(losses)
        values = {key: float(value.detach()) if torch.is_tensor(value) else float(value)
                  for key, value in log_vars.items()}
        check_losses(values, iteration, settings)
        factor = settings.lr_factor(iteration)
        for group, base_lr in zip(self.optim_wrapper.param_groups, self.base_lrs):
            group['lr'] = base_lr * factor
        self.optim_wrapper.backward(total)
        if not _gradients_finite(self.params):
            raise TrialRejected(f'non-finite gradient at iteration {iteration}')
        self.optim_wrapper.step()
        self.optim_wrapper.zero_grad()
        self.means.add(values)

    def result(self) -> ProxyResult:
        if self.failure is None:
            assert self.metrics is not None and set(METRIC_KEYS) <= set(self.metrics)
        return ProxyResult(metrics=dict(self.metrics or {}) if self.failure is None else {},
                           iterations=self.iterations, wall_time=self.wall_time, history=self.history,
                           failure=self.failure)


def _build_candidates(search_cfg, genomes, seeds, reports, settings, base_dir, distill_losses,
                      device: str) -> List[_Candidate]:
    """Each student is built exactly as a single trial builds it (seeded, its own teacher instance consuming the
    same random draws), then the group's first teacher replaces the others (one teacher in memory)."""
    candidates: List[_Candidate] = []
    with quiet_mmengine():
        for genome, seed, report in zip(genomes, seeds, reports):
            seed_everything(seed)
            model = build_distiller(search_cfg, genome, settings, base_dir, distill_losses)
            if candidates:
                model.teacher = candidates[0].model.teacher   # frozen, eval mode, no grad: safely shared
            model = model.to(device)
            model.set_feature_autocast(feature_autocast_device(settings, device))
            model.train()
            candidates.append(_Candidate(genome, seed, report, model, settings))
    return candidates


def _evaluate_and_report(candidate: _Candidate, iteration: int, settings: ProxySettings, evaluate) -> None:
    last = iteration == settings.iterations
    entry: Dict[str, float] = {}
    if iteration % settings.report_interval == 0 or (last and candidate.means.count):
        entry.update(candidate.means.pop())
    if last or (settings.eval_interval and iteration % settings.eval_interval == 0):
        candidate.metrics = evaluate(candidate.model)
        entry.update(candidate.metrics)
    if entry:
        entry = {'iteration': iteration, **entry}
        candidate.history.append(entry)
        if candidate.report is not None:
            candidate.report(dict(entry))   # may raise (Ray Tune stops trials that way): ends this candidate


def _train_lockstep(candidates: List[_Candidate], data: ProxyData, seed: int, settings: ProxySettings,
                    device: str, evaluate, start: float, teacher_cache=None) -> None:
    """Train candidates of one training seed on the same batches: per step, one batch (loading +
    preprocessing) and one teacher forward (or its cached features: no randomness either way), then each
    candidate's own step under its own random streams."""
    batch_rng = RngStreams(seed)   # the batch order and the random flips depend on the seed only
    with batch_rng.active():
        batches = data.train_batches(seed, pin_memory=device == 'cuda')
    for iteration in range(1, settings.iterations + 1):
        active = [c for c in candidates if c.failure is None]
        if not active:
            break
        head = active[0].model   # every candidate has the same preprocessor (the student's) and teacher
        with batch_rng.active():
            batch = head.data_preprocessor(next(batches), True)
        teacher = (teacher_cache.teacher_outputs(head, batch) if teacher_cache is not None
                   else head.teacher_forward(batch['inputs']))
        for candidate in active:
            candidate.iterations = iteration
            try:
                with candidate.rng.active():
                    candidate.train_step(batch, teacher, iteration, settings)
                    _evaluate_and_report(candidate, iteration, settings, evaluate)
            except Exception as exc:   # this candidate ends (rejected, crashed, or stopped by its report)
                candidate.failure = exc
                candidate.optim_wrapper.zero_grad()
            candidate.wall_time = time.time() - start


def run_proxy_group(search_cfg: Mapping, genomes: Sequence[Union[str, 'Genome', None]], seeds: Sequence[int],
                    reports: Optional[Sequence[Optional[Report]]] = None, base_dir: str = '.',
                    distill_losses: Optional[List[Mapping]] = None, teacher_cache_dir: Optional[str] = None,
                    expected_trials: int = 1) -> List[ProxyResult]:
    """Train K candidate proxies in lockstep against one teacher (shared-teacher trial) and return their results
    in order; each equals ``run_proxy_trial(search_cfg, genomes[k], seeds[k], ...)`` up to floating-point noise.

    Candidates with the same seed share every batch and the teacher's forward (and the teacher-only values
    the losses derive from it); candidates with different seeds are trained as successive sub-groups (their
    batches differ). The held-out images are decoded once and kept in memory for every evaluation. A candidate
    that fails (rejected, crashing, or whose ``report`` raises) leaves the group with ``result.failure`` set;
    the others go on.

    ``teacher_cache_dir``: the search's teacher cache folder (shared by its trials); ``expected_trials``: how many
    candidate evaluations the search makes (1: a standalone run), which decides whether ``proxy.teacher_cache =
    'auto'`` builds the cache (it pays when the teacher forwards saved exceed its build).
    """
    start = time.time()
    genomes, seeds = list(genomes), [int(s) for s in seeds]
    reports = list(reports) if reports is not None else [None] * len(genomes)
    if not genomes or len(seeds) != len(genomes) or len(reports) != len(genomes):
        raise ValueError(f'run_proxy_group: {len(genomes)} genomes, {len(seeds)} seeds and {len(reports)} reports '
                         'must be equally many (at least one)')
    settings = check_search_config(search_cfg)
    tune_cpu_allocator()   # before the training loop's first allocations
    device = 'cuda' if torch.cuda.is_available() else 'cpu'   # a GPU trial (the controller's resources)
    if device == 'cuda':
        torch.cuda.init()   # CUDA random state exists before any candidate's streams are captured
    with quiet_mmengine():
        data = ProxyData(search_cfg, settings, base_dir)
    gt = load_coco(data.ann_file)
    val_batches = list(data.val_loader())   # the test pipeline has no randomness: decode once, reuse

    def evaluate(model):
        return evaluate_detector(model, val_batches, gt, data.val_img_ids, data.cat_ids, settings.metric)

    results: List[Optional[ProxyResult]] = [None] * len(genomes)
    distinct_seeds = list(dict.fromkeys(seeds))   # in first-seen order
    teacher_cache, cache_decided = None, False
    try:
        for seed in distinct_seeds:
            members = [k for k, s in enumerate(seeds) if s == seed]
            candidates = _build_candidates(search_cfg, [genomes[k] for k in members], [seed] * len(members),
                                           [reports[k] for k in members], settings, base_dir, distill_losses,
                                           device)
            if not cache_decided:   # once per run, with the first built distiller's teacher and preprocessor
                # a search of expected_trials evaluations in groups like this one makes this many teacher runs
                teacher_runs = math.ceil(max(1, expected_trials) * len(distinct_seeds) / len(genomes))
                teacher_cache, _ = open_teacher_cache(search_cfg, settings, data, candidates[0].model,
                                                      teacher_cache_dir, teacher_runs, base_dir, gt.imgs)
                cache_decided = True
            _train_lockstep(candidates, data, seed, settings, device, evaluate, start, teacher_cache)
            for k, candidate in zip(members, candidates):
                results[k] = candidate.result()
            del candidates
    finally:
        if teacher_cache is not None:
            teacher_cache.close()
    return results


def run_proxy_trial(search_cfg: Mapping, genome: Union[str, 'Genome', None] = None, seed: int = 0,
                    report: Optional[Report] = None, base_dir: str = '.',
                    distill_losses: Optional[List[Mapping]] = None, teacher_cache_dir: Optional[str] = None,
                    expected_trials: int = 1) -> ProxyResult:
    """Train the proxy of ``genome`` (a Genome, its JSON, or None for the student alone) and return its AP.

    ``distill_losses``: distiller loss entries trained besides the genome's (search/baselines.py passes a
    published method's, e.g. ``FGDLoss``, with genome None, to evaluate it under the same proxy).

    ``report(dict)`` receives, every ``report_interval`` iterations, ``{'iteration': i, 'loss': total,
    '<term>': mean, ...}`` (means over the interval) and, every ``eval_interval`` iterations and at the end,
    ``'AP'``, ``'AP50'``, ... in the same dict when both fall on one iteration. Deterministic for a seed.
    A rejected candidate raises TrialRejected; an exception raised by ``report`` propagates untouched.
    ``teacher_cache_dir``, ``expected_trials``: as for ``run_proxy_group``.
    """
    result = run_proxy_group(search_cfg, [genome], [seed], [report], base_dir, distill_losses, teacher_cache_dir,
                             expected_trials)[0]
    if result.failure is not None:
        raise result.failure
    return result
