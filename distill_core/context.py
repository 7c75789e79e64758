"""What one training step offers the distillation losses.

The distiller runs the student once and the teacher once; a ``DistillContext`` carries the results (features,
dense-head outputs, recorded module calls) and a per-step cache, so losses never recompute what another
loss, or the student's own detection loss, already computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


def dense_head_name(detector: nn.Module) -> str:
    """The head whose per-level maps are the detector's dense response (one-stage head, or the RPN)."""
    for name in ('bbox_head', 'rpn_head'):
        if getattr(detector, name, None) is not None:
            return name
    raise ValueError(f'{type(detector).__name__} has neither bbox_head nor rpn_head')


@dataclass
class DistillContext:
    inputs: Tensor                       # the student's preprocessed batch, N x 3 x H x W
    data_samples: List[Any]              # DetDataSample list with gt_instances (xyxy, input pixels)
    student: nn.Module
    teacher: nn.Module
    # the distilled FPN level pairs (``levels.py``): student maps adapted to the teacher's channels (and, under
    # index pairing, resized to its map), the raw student maps, and the teacher's maps of the same pairs
    student_feats: Tuple[Tensor, ...]
    raw_student_feats: Tuple[Tensor, ...]
    teacher_feats: Tuple[Tensor, ...]
    teacher_inputs: Tensor               # the batch as the teacher's preprocessing expects it
    recorded: Dict[str, List[Tuple[tuple, Any]]] = field(default_factory=dict)
    cache: Dict[str, Any] = field(default_factory=dict)
    # every neck output of the teacher (its own heads read all of them); None: the paired ``teacher_feats``
    teacher_neck_feats: Optional[Tuple[Tensor, ...]] = None
    level_strides: Optional[Tuple[float, ...]] = None   # stride of each distilled pair's maps, if known

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute a per-step value once, whichever loss asks first (GT masks, CAMs, decoded boxes...)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    @property
    def student_head_outputs(self) -> Sequence:
        """The student's dense-head outputs from its own detection-loss forward (no second head pass)."""
        calls = self.recorded.get('dense_head')
        if not calls:
            raise RuntimeError('the student dense head was not called during its loss forward')
        return calls[0][1]

    @property
    def teacher_head_outputs(self) -> Sequence:
        """The teacher's dense-head outputs on its features, computed on first use, without gradient."""
        def run():
            with torch.no_grad():
                return getattr(self.teacher, dense_head_name(self.teacher))(list(self.all_teacher_feats))
        return self.cached('teacher_head_outputs', run)

    @property
    def all_teacher_feats(self) -> Tuple[Tensor, ...]:
        """Every neck output of the teacher, in its own level order (what its dense and RoI heads take)."""
        return self.teacher_feats if self.teacher_neck_feats is None else self.teacher_neck_feats

    @property
    def student_family(self):
        """The student's detector family (``families.py``)."""
        from .families import family_of   # families imports this module
        return self.cached('student_family', lambda: family_of(self.student))

    @property
    def teacher_family(self):
        """The teacher's detector family: a heterogeneous pair reads each side's outputs with its own."""
        from .families import family_of
        return self.cached('teacher_family', lambda: family_of(self.teacher))

    @property
    def gt_bboxes(self) -> List[Tensor]:
        return [s.gt_instances.bboxes for s in self.data_samples]

    @property
    def gt_labels(self) -> List[Tensor]:
        return [s.gt_instances.labels for s in self.data_samples]

    @property
    def img_shapes(self) -> List[Tuple[int, int]]:
        return [tuple(s.metainfo['img_shape'][:2]) for s in self.data_samples]

    @property
    def num_levels(self) -> int:
        return len(self.teacher_feats)

    def recorded_call(self, key: str) -> Optional[Tuple[tuple, Any]]:
        calls = self.recorded.get(key)
        return calls[0] if calls else None
