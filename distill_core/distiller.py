"""``DetectionDistiller``: a frozen teacher and a trained student for MMDetection 3.x.

One student forward per step: the student's neck features are computed once and reused both by its own
detection loss (through ``student.loss``, with ``extract_feat`` answered from the features already computed)
and by every distillation loss. Distillation losses are modules of two kinds:

* level-wise (the published methods' interface): ``loss(student_feat, teacher_feat, data_samples, **extra)``,
  one module per FPN level, listed with ``levels``; ``extra`` comes from the module's optional
  ``step_inputs(ctx, level)`` (e.g. GKD's gradient maps);
* step-wise (e.g. ``SearchedDistillLoss``): ``loss(ctx) -> dict`` with the whole ``DistillContext``.

A loss that needs more of the student's forward than the dense head declares ``student_recorders`` (a mapping
key -> module path); those modules' calls are recorded during the student's loss forward into ``ctx.recorded``.

Shared teachers: ``teacher_forward(inputs)`` returns the step's :class:`TeacherOutputs`, which ``loss(...,
teacher_outputs=...)`` accepts instead of running the teacher itself, so that several distillers holding the same
teacher module (``workers/proxy.py`` trains K candidate students in lockstep on the same batches) pay the teacher
forward once per step. Teacher-only per-step values that a loss caches lazily (head outputs, decoded boxes) are
kept in ``TeacherOutputs.shared`` for the next student of the step.

Mixed precision (``set_feature_autocast``): the backbone and neck forwards of both detectors, where most of the
FLOPs are, may run under bfloat16 autocast; their features are cast back to float32, so that the heads, the
detection and distillation losses run at full precision. Why not the whole step: mmcv's compiled ops that the
heads call (``sigmoid_focal_loss``, ``RoIAlign``, ``nms``) have no bfloat16 kernels, and per-sample sums of
squared feature differences (FGD, MGD) lose digits in bfloat16.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from torch import Tensor, nn

from .checkpoint import inherit_matching_tensors, load_matching_weights
from .context import DistillContext, dense_head_name
from .errors import ConfigError
from .levels import LEVEL_PAIRINGS, LevelPair, describe, fpn_strides, pair_levels, resized_to
from .model_config import build_in_mmdet_scope, resolve_model_config


def _neck_attr(detector: nn.Module, attr: str) -> Optional[int]:
    neck = getattr(detector, 'neck', None)
    value = getattr(neck, attr, None) if neck is not None else None
    return value if isinstance(value, int) else None


def _level_strides(detector: nn.Module) -> Optional[List[float]]:
    """The stride of each neck output, where the dense head's priors give one per neck level (else None)."""
    strides, levels = fpn_strides(detector), _neck_attr(detector, 'num_outs')
    return strides if strides is not None and (levels is None or len(strides) == levels) else None


class _TeacherInputs(nn.Module):
    """Re-normalise the student's batch for a teacher trained with another mean/std or channel order."""

    def __init__(self, student_pre: Mapping, teacher_pre: Mapping):
        super().__init__()
        def stats(pre):
            mean = torch.tensor(pre.get('mean') or [0.0, 0.0, 0.0], dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(pre.get('std') or [1.0, 1.0, 1.0], dtype=torch.float32).view(1, -1, 1, 1)
            return mean, std, bool(pre.get('bgr_to_rgb', False) or pre.get('rgb_to_bgr', False))
        s_mean, s_std, s_flip = stats(student_pre)
        t_mean, t_std, t_flip = stats(teacher_pre)
        self.flip = s_flip != t_flip
        self.identity = (not self.flip and torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std))
        self.register_buffer('s_mean', s_mean, persistent=False)
        self.register_buffer('s_std', s_std, persistent=False)
        self.register_buffer('t_mean', t_mean, persistent=False)
        self.register_buffer('t_std', t_std, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.identity:
            return x
        raw = x * self.s_std + self.s_mean
        if self.flip:
            raw = raw.flip(1)
            return (raw - self.t_mean.flip(1)) / self.t_std.flip(1)
        return (raw - self.t_mean) / self.t_std


# DistillContext cache keys (or key prefixes: the teacher's head towers per cross point) that depend on the teacher and
# the batch only: shareable between the students of a step
TEACHER_ONLY_CACHE_KEYS = ('teacher_head_outputs', 'teacher_dense_boxes', 'teacher_towers_')


@dataclass
class TeacherOutputs:
    """The teacher's side of one step: its preprocessed batch, its neck features and the teacher-only values
    computed lazily by the losses (filled by the first student that needs them)."""
    inputs: Tensor
    feats: Tuple[Tensor, ...]
    shared: Dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def features_reused(detector: nn.Module, feats: Tuple[Tensor, ...]):
    """Let ``detector.loss`` take ``feats`` instead of running backbone and neck a second time.

    Works for every MMDetection detector, since all of them obtain features through ``extract_feat``.
    """
    detector.extract_feat = lambda _inputs: feats
    try:
        yield
    finally:
        del detector.extract_feat


@contextlib.contextmanager
def _recording(root: nn.Module, points: Mapping[str, str]):
    """Record (args, output) of the named submodules while the block runs."""
    records: Dict[str, List[tuple]] = {key: [] for key in points}
    handles = []
    for key, path in points.items():
        module = root.get_submodule(path)
        handles.append(module.register_forward_hook(
            lambda _m, args, out, key=key: records[key].append((args, out))))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


@MODELS.register_module()
class DetectionDistiller(BaseDetector):
    """Teacher + student detector with distillation losses.

    Args:
        teacher: ``dict(config=<path|dict>, checkpoint=<path>)``. Frozen: no gradient, always in eval mode.
        student: ``dict(config=<path|dict>)``. Its data preprocessor is the distiller's.
        distill_losses: list of ``dict(name=..., loss=<loss cfg>, levels='all'|[i, ...])``; without
            ``levels`` the loss is step-wise and receives the ``DistillContext``.
        inherit_neck_head: copy the teacher's non-backbone tensors into the student where names and shapes
            match, after the student's ``init_weights`` (the inheriting strategy).
        distill_schedule: ``dict(warmup=<fraction>, decay='none'|'linear')``: every distillation loss is multiplied
            by a factor of the training progress (``TrainingStrategy.distill_weight``): a linear warm-up over the
            first ``warmup`` fraction of the schedule, a linear decay to 0 at its end. The progress comes from
            ``set_distill_progress`` (the proxy's own loop) or else from the mmengine Runner's runtime info
            (``iter`` / ``max_iters``, kept by its RuntimeInfoHook), so ``detkds-search train`` needs no extra hook.
        adapt_channels: add a learnable 1x1 conv per level mapping student to teacher channels when they differ.
        level_pairing: which student FPN level is distilled against which teacher level (``levels.py``):
            ``'stride'`` (default) pairs equal strides and skips the rest (P2-P6 vs P3-P7: P3-P6), ``'index'`` is
            PKD's heterogeneous recipe (position in the neck tuple, student map resized to the teacher's).
            Level-wise losses' ``levels`` and the adapters index these pairs.
    """

    def __init__(self,
                 teacher: Mapping,
                 student: Mapping,
                 distill_losses: Sequence[Mapping] = (),
                 inherit_neck_head: bool = False,
                 distill_schedule: Optional[Mapping] = None,
                 adapt_channels: bool = True,
                 level_pairing: str = 'stride',
                 data_preprocessor: Optional[Mapping] = None,
                 init_cfg=None):
        from . import register_all_modules
        register_all_modules()   # every loss type a config may name
        teacher = dict(teacher or {})
        student = dict(student or {})
        unknown = (set(teacher) - {'config', 'checkpoint'}) | (set(student) - {'config'})
        if unknown:
            raise ConfigError(f'DetectionDistiller: unknown teacher/student keys {sorted(unknown)}')
        if 'config' not in teacher or 'config' not in student:
            raise ConfigError('DetectionDistiller needs teacher=dict(config=..., checkpoint=...) and '
                              'student=dict(config=...)')
        student_cfg = resolve_model_config(student['config'], 'student')
        teacher_cfg = resolve_model_config(teacher['config'], 'teacher')
        pre_cfg = ConfigDict(data_preprocessor or student_cfg.get('data_preprocessor') or
                             dict(type='DetDataPreprocessor'))
        super().__init__(data_preprocessor=build_in_mmdet_scope(pre_cfg), init_cfg=init_cfg)

        self.student = build_in_mmdet_scope(student_cfg)
        self.teacher = build_in_mmdet_scope(teacher_cfg)
        checkpoint = teacher.get('checkpoint')
        if checkpoint is None:
            raise ConfigError('DetectionDistiller: teacher.checkpoint is required (a trained teacher)')
        load_matching_weights(self.teacher, checkpoint, 'teacher')
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.teacher_inputs = _TeacherInputs(pre_cfg, teacher_cfg.get('data_preprocessor') or {})
        self.inherit_neck_head = inherit_neck_head
        self.inherited_keys: List[str] = []
        schedule = dict(distill_schedule or {})
        unknown = set(schedule) - {'warmup', 'decay'}
        if unknown:
            raise ConfigError(f'DetectionDistiller.distill_schedule: unknown key(s) {sorted(unknown)}; known: '
                              'warmup, decay')
        from .genome import TrainingStrategy   # not at the top: genome -> method_ops -> methods.gkd -> here
        self.distill_schedule = TrainingStrategy(bool(inherit_neck_head), **schedule)
        self._distill_progress: Optional[float] = None
        self.feature_autocast: Optional[str] = None   # device type of the features' bfloat16 autocast, or None

        self.level_pairing = level_pairing
        self.level_pairs = self._pair_levels()
        self.num_levels = len(self.level_pairs) if self.level_pairs is not None else None
        self.adapters = self._build_adapters() if adapt_channels else nn.ModuleDict()
        self.distill_losses = nn.ModuleDict()
        self._plan: List[Tuple[str, Optional[int], str]] = []   # (entry name, level or None, module key)
        for entry in distill_losses:
            self._add_loss(dict(entry))
        # losses with trainable parts sized by the features (the searched ``context``/``generative`` ops) build
        # them now, so that the optimizer, built after the model, trains them
        channels = _neck_attr(self.teacher, 'out_channels')
        for module in self.distill_losses.values():
            if hasattr(module, 'bind_features'):
                module.bind_features(channels, self.num_levels)
        self._recorders = {'dense_head': dense_head_name(self.student)}
        for module in self.distill_losses.values():
            if hasattr(module, 'bind_detectors'):   # losses that check the (teacher, student) pair at build
                module.bind_detectors(self.student, self.teacher)
            recorders = (module.student_recorders_for(self.student) if hasattr(module, 'student_recorders_for')
                         else getattr(module, 'student_recorders', {}))   # detector-dependent or fixed
            for key, path in dict(recorders).items():
                self._recorders[key] = path

    # ------------------------------------------------------------------ construction helpers
    def _pair_levels(self) -> Optional[List[LevelPair]]:
        """The distilled level pairs (None: a neck without a known level count). Strides come from the dense
        heads' priors; where one is unknown, levels pair one to one by index and their counts must agree."""
        if self.level_pairing not in LEVEL_PAIRINGS:
            raise ConfigError(f'DetectionDistiller.level_pairing must be one of {list(LEVEL_PAIRINGS)}, '
                              f'got {self.level_pairing!r}')
        s_strides, t_strides = _level_strides(self.student), _level_strides(self.teacher)
        if s_strides is None or t_strides is None:
            s_levels, t_levels = _neck_attr(self.student, 'num_outs'), _neck_attr(self.teacher, 'num_outs')
            if s_levels is not None and t_levels is not None and s_levels != t_levels:
                raise ConfigError(f'student FPN has {s_levels} levels but the teacher FPN has {t_levels}, and their '
                                  'strides are unknown: distillation cannot pair them')
            return None if t_levels is None else [LevelPair(i, i, 0.0) for i in range(t_levels)]
        pairs, skipped = pair_levels(s_strides, t_strides, self.level_pairing)
        if skipped or any(p.student != i or p.teacher != i for i, p in enumerate(pairs)):
            print_log(describe(pairs, skipped, self.level_pairing), logger='current')   # once, at build
        return pairs

    def _build_adapters(self) -> nn.ModuleDict:
        s_ch, t_ch = _neck_attr(self.student, 'out_channels'), _neck_attr(self.teacher, 'out_channels')
        if s_ch is None or t_ch is None or s_ch == t_ch or self.num_levels is None:
            return nn.ModuleDict()
        return nn.ModuleDict({f'fpn{i}': nn.Conv2d(s_ch, t_ch, 1) for i in range(self.num_levels)})

    def _add_loss(self, entry: dict) -> None:
        unknown = set(entry) - {'name', 'loss', 'levels'}
        if unknown or 'name' not in entry or 'loss' not in entry:
            raise ConfigError(f'distill_losses entry {entry}: expected keys name, loss and optional levels')
        name = entry['name']
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f'distill_losses: name {name!r} must be an identifier')
        loss_cfg = ConfigDict(entry['loss'])
        if MODELS.get(loss_cfg.get('type')) is None:
            raise ConfigError(f'distill_losses.{name}: unknown loss type {loss_cfg.get("type")!r}')
        levels = entry.get('levels')
        if levels is None:
            self.distill_losses[name] = build_in_mmdet_scope(loss_cfg)
            self._plan.append((name, None, name))
            return
        if levels == 'all':
            if self.num_levels is None:
                raise ConfigError(f'distill_losses.{name}: levels="all" needs an FPN-style neck')
            levels = list(range(self.num_levels))
        for level in levels:
            if self.num_levels is not None and not 0 <= level < self.num_levels:
                raise ConfigError(f'distill_losses.{name}: level {level} outside 0..{self.num_levels - 1}')
            key = f'{name}_fpn{level}'
            self.distill_losses[key] = build_in_mmdet_scope(loss_cfg)
            self._plan.append((name, level, key))

    # ------------------------------------------------------------------ weights and modes
    def init_weights(self) -> None:
        """Initialise student and loss modules (never the loaded teacher), then inherit if asked."""
        self.student.init_weights()
        for module in list(self.distill_losses.values()) + list(self.adapters.values()):
            if hasattr(module, 'init_weights'):
                module.init_weights()
        if self.inherit_neck_head:
            self.inherited_keys = inherit_matching_tensors(self.student, self.teacher.state_dict())
        self._is_init = True

    # ------------------------------------------------------------------ distillation weight schedule
    def set_distill_progress(self, progress: Optional[float]) -> None:
        """The fraction of the schedule done before this step (a training loop without an mmengine Runner)."""
        self._distill_progress = None if progress is None else float(progress)

    def distill_factor(self) -> float:
        """This step's factor on the distillation losses (1 without warm-up or decay)."""
        if self.distill_schedule.constant_weight:
            return 1.0
        progress = self._distill_progress
        if progress is None:
            progress = _runner_progress()
        if progress is None:
            raise ConfigError('DetectionDistiller.distill_schedule needs the training progress: train with an '
                              'mmengine Runner or call set_distill_progress(fraction) before each step')
        return self.distill_schedule.distill_weight(progress)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()   # the runner's model.train() must not switch the teacher's BN/dropout
        return self

    # ------------------------------------------------------------------ forward paths
    def extract_feat(self, batch_inputs: Tensor):
        return self.student.extract_feat(batch_inputs)

    def predict(self, batch_inputs: Tensor, batch_data_samples, rescale: bool = True):
        return self.student.predict(batch_inputs, batch_data_samples, rescale=rescale)

    def _forward(self, batch_inputs: Tensor, batch_data_samples=None):
        return self.student._forward(batch_inputs, batch_data_samples)

    def adapt(self, feats: Iterable[Tensor]) -> Tuple[Tensor, ...]:
        if not len(self.adapters):
            return tuple(feats)
        return tuple(self.adapters[f'fpn{i}'](f) for i, f in enumerate(feats))

    def paired_features(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]
                        ) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...], Tuple[Tensor, ...]]:
        """(raw student, adapted student, teacher) maps of the distilled level pairs; under index pairing the
        adapted student map is resized to its teacher map's size."""
        if self.level_pairs is None:
            if len(student_feats) != len(teacher_feats):
                raise ConfigError(f'student gives {len(student_feats)} feature levels, teacher {len(teacher_feats)}')
            return tuple(student_feats), self.adapt(student_feats), tuple(teacher_feats)
        if max(p.student for p in self.level_pairs) >= len(student_feats) or \
                max(p.teacher for p in self.level_pairs) >= len(teacher_feats):
            raise ConfigError(f'student gives {len(student_feats)} feature levels, teacher {len(teacher_feats)}: '
                              f'fewer than the paired levels {[(p.student, p.teacher) for p in self.level_pairs]}')
        raw = tuple(student_feats[p.student] for p in self.level_pairs)
        teacher = tuple(teacher_feats[p.teacher] for p in self.level_pairs)
        adapted = self.adapt(raw)
        if self.level_pairing == 'index':   # stride pairs have equal sizes by construction: never resized
            adapted = tuple(resized_to(s, t) for s, t in zip(adapted, teacher))
        return raw, adapted, teacher

    def set_feature_autocast(self, device_type: Optional[str]) -> None:
        """Run both detectors' backbone and neck under bfloat16 autocast on ``device_type`` ('cuda', or 'cpu'
        where torch supports it), their features cast back to float32; None: full precision everywhere."""
        self.feature_autocast = device_type

    @property
    def feature_precision(self) -> str:
        return 'float32' if self.feature_autocast is None else 'bfloat16'

    def _features(self, detector: nn.Module, inputs: Tensor) -> Tuple[Tensor, ...]:
        """``detector.extract_feat(inputs)``, under the feature autocast if one is set (float32 features out)."""
        if self.feature_autocast is None:
            return tuple(detector.extract_feat(inputs))
        with torch.autocast(self.feature_autocast, dtype=torch.bfloat16):
            feats = tuple(detector.extract_feat(inputs))
        return tuple(f.float() for f in feats)

    @torch.no_grad()
    def teacher_forward(self, batch_inputs: Tensor) -> TeacherOutputs:
        """The teacher's features of the student's preprocessed batch (no gradient)."""
        teacher_inputs = self.teacher_inputs(batch_inputs)
        return TeacherOutputs(teacher_inputs, self._features(self.teacher, teacher_inputs))

    def loss(self, batch_inputs: Tensor, batch_data_samples,
             teacher_outputs: Optional[TeacherOutputs] = None) -> Dict[str, Tensor]:
        """Detection + distillation losses. ``teacher_outputs``: this batch's ``teacher_forward`` result, computed
        once for several students sharing the teacher; None runs the teacher here."""
        if teacher_outputs is None:
            teacher_outputs = self.teacher_forward(batch_inputs)
        teacher_inputs, teacher_feats = teacher_outputs.inputs, teacher_outputs.feats
        all_student_feats = self._features(self.student, batch_inputs)
        raw_feats, student_feats, paired_teacher_feats = self.paired_features(all_student_feats, teacher_feats)
        with _recording(self.student, self._recorders) as recorded, \
                features_reused(self.student, all_student_feats):
            losses = dict(self.student.loss(batch_inputs, batch_data_samples))
        ctx = DistillContext(
            inputs=batch_inputs, data_samples=batch_data_samples, student=self.student, teacher=self.teacher,
            student_feats=student_feats, raw_student_feats=raw_feats, teacher_feats=paired_teacher_feats,
            teacher_inputs=teacher_inputs, recorded=recorded, cache=dict(teacher_outputs.shared),
            teacher_neck_feats=tuple(teacher_feats),
            level_strides=None if self.level_pairs is None or not self.level_pairs[0].stride else
            tuple(p.stride for p in self.level_pairs))
        factor = self.distill_factor() if self._plan else 1.0
        for name, level, key in self._plan:
            module = self.distill_losses[key]
            if level is None:
                out = module(ctx)
            else:
                extra = module.step_inputs(ctx, level) if hasattr(module, 'step_inputs') else {}
                out = module(ctx.student_feats[level], ctx.teacher_feats[level], batch_data_samples, **extra)
            named = _named_outputs(out, name, '' if level is None else f'_fpn{level}')
            losses.update({k: v * factor if factor != 1.0 and k.startswith('loss') else v for k, v in named.items()})
        teacher_outputs.shared.update({key: value for key, value in ctx.cache.items()
                                       if isinstance(key, str) and key.startswith(TEACHER_ONLY_CACHE_KEYS)})
        return losses


def _runner_progress() -> Optional[float]:
    """``iter / max_iters`` of the running mmengine Runner (its RuntimeInfoHook keeps both in the MessageHub,
    epoch-based loops included), or None outside one."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    current, total = hub.get_info('iter'), hub.get_info('max_iters')
    if current is None or not total:
        return None
    return float(current) / float(total)


def _named_outputs(out: Union[Tensor, Mapping[str, Tensor]], name: str, suffix: str) -> Dict[str, Tensor]:
    """Name a loss module's output: ``loss_<name>[_<part>]<suffix>``; parts not starting with ``loss``
    are logged metrics (MMDetection sums only keys containing 'loss'), detached."""
    if torch.is_tensor(out):
        return {f'loss_{name}{suffix}': out}
    named = {}
    for part, value in out.items():
        if part.startswith('loss'):
            named[f'loss_{name}_{part[4:].lstrip("_")}{suffix}'.replace('__', '_').rstrip('_')] = value
        else:
            named[f'{name}_{part}{suffix}'] = value.detach() if torch.is_tensor(value) else value
    return named
