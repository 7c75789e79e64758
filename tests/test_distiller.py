"""DetectionDistiller on every demo pair: frozen teacher, one student forward, adapters, inheriting."""
import copy
import os.path as osp

import pytest
import torch

from distill_core.checkpoint import save_atomic
from distill_core.distiller import DetectionDistiller
from distill_core.errors import CheckpointError, ConfigError

from .demo_utils import DEMO_FAMILIES, build_teacher_checkpoint, demo_batch, demo_config_path

torch.set_num_threads(2)


def make_distiller(family, tmp_path, student=None, **kwargs):
    ckpt = build_teacher_checkpoint(family, tmp_path)
    cfg = dict(
        teacher=dict(config=demo_config_path(f'{family}_teacher'), checkpoint=ckpt),
        student=dict(config=demo_config_path(student or f'{family}_student')),
        distill_losses=[dict(name='fi', levels='all', loss=dict(type='FeatureImitationLoss', loss_weight=1.0))],
    )
    cfg.update(kwargs)
    model = DetectionDistiller(**cfg)
    model.init_weights()
    return model


@pytest.mark.parametrize('family', DEMO_FAMILIES)
def test_one_step_trains_student_not_teacher(family, tmp_path, shapes_root):
    model = make_distiller(family, tmp_path)
    model.train()
    assert not model.teacher.training, 'teacher must stay in eval mode after train()'
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    inputs, samples = demo_batch(model, family, shapes_root)
    losses = model.loss(inputs, samples)
    fi_keys = [k for k in losses if k.startswith('loss_fi_fpn')]
    assert len(fi_keys) == model.num_levels == 5
    total = sum(v.sum() if torch.is_tensor(v) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    # ResNet's zero-initialised last BN of each residual block blocks its branch on the first step, so
    # check the parts every gradient must reach: stem, neck and head (and the distillation adapters).
    # (A level without positives leaves its regression scale at an exact zero gradient, hence 90 %.)
    reached = [param.grad is not None and bool(param.grad.abs().sum() > 0)
               for name, param in model.student.named_parameters()
               if name.startswith(('backbone.conv1', 'backbone.stem', 'neck.', 'bbox_head.', 'rpn_head.',
                                   'roi_head.'))]
    assert sum(reached) >= 0.9 * len(reached), f'{len(reached) - sum(reached)} of {len(reached)} got no gradient'
    assert all(p.grad is not None for n, p in model.student.named_parameters() if n.startswith('neck.'))
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f'teacher tensor {key} changed'


def test_single_student_forward_per_step(tmp_path, shapes_root):
    model = make_distiller('retinanet', tmp_path)
    calls = {'backbone': 0, 'head': 0}
    model.student.backbone.register_forward_hook(lambda *_: calls.__setitem__('backbone', calls['backbone'] + 1))
    model.student.bbox_head.register_forward_hook(lambda *_: calls.__setitem__('head', calls['head'] + 1))
    inputs, samples = demo_batch(model, 'retinanet', shapes_root)
    model.loss(inputs, samples)
    assert calls == {'backbone': 1, 'head': 1}


def test_channel_adapter_gets_gradient(tmp_path, shapes_root):
    model = make_distiller('retinanet', tmp_path, student='retinanet_student_fpn32')
    assert len(model.adapters) == 5
    assert model.adapters['fpn0'].in_channels == 32 and model.adapters['fpn0'].out_channels == 64
    inputs, samples = demo_batch(model, 'retinanet', shapes_root)
    losses = model.loss(inputs, samples)
    sum(v for k, v in losses.items() if k.startswith('loss_fi')).backward()
    for adapter in model.adapters.values():
        assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('family', DEMO_FAMILIES)
def test_inheriting_copies_exactly_matching_neck_and_head(family, tmp_path):
    model = make_distiller(family, tmp_path, inherit_neck_head=True)
    teacher_state, student_state = model.teacher.state_dict(), model.student.state_dict()
    expected = sorted(k for k, v in teacher_state.items() if not k.startswith('backbone.')
                      and k in student_state and student_state[k].shape == v.shape)
    assert model.inherited_keys == expected
    assert any(k.startswith('neck.') for k in expected)
    assert any('head' in k for k in expected)
    for key in expected:
        assert torch.equal(student_state[key], teacher_state[key])
    assert not any(k.startswith('backbone.') for k in model.inherited_keys), 'backbones are never inherited'


def test_missing_teacher_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match='teacher checkpoint not found'):
        DetectionDistiller(teacher=dict(config=demo_config_path('retinanet_teacher'),
                                        checkpoint=str(tmp_path / 'none.pth')),
                           student=dict(config=demo_config_path('retinanet_student')))


def test_checkpoint_not_matching_teacher_config(tmp_path):
    student_ckpt = build_teacher_checkpoint('retinanet', tmp_path, config='retinanet_student')
    with pytest.raises(CheckpointError, match='does not match its config'):
        DetectionDistiller(teacher=dict(config=demo_config_path('retinanet_teacher'), checkpoint=student_ckpt),
                           student=dict(config=demo_config_path('retinanet_student')))


def test_unknown_model_type_and_missing_config(tmp_path):
    ckpt = build_teacher_checkpoint('retinanet', tmp_path)
    with pytest.raises(ConfigError, match="unknown model type 'NoSuchDetector'"):
        DetectionDistiller(teacher=dict(config=demo_config_path('retinanet_teacher'), checkpoint=ckpt),
                           student=dict(config=dict(type='NoSuchDetector')))
    with pytest.raises(ConfigError, match='config file not found'):
        DetectionDistiller(teacher=dict(config='configs/demo/nope.py', checkpoint=ckpt),
                           student=dict(config=demo_config_path('retinanet_student')))
    with pytest.raises(ConfigError, match='unknown loss type'):
        DetectionDistiller(teacher=dict(config=demo_config_path('retinanet_teacher'), checkpoint=ckpt),
                           student=dict(config=demo_config_path('retinanet_student')),
                           distill_losses=[dict(name='x', levels='all', loss=dict(type='NoSuchLoss'))])


def test_fpn_level_mismatch(tmp_path):
    from mmengine.config import Config
    ckpt = build_teacher_checkpoint('retinanet', tmp_path)
    student = Config.fromfile(demo_config_path('retinanet_student')).model
    student.neck.num_outs = 4
    with pytest.raises(ConfigError, match='student FPN has 4 levels but the teacher FPN has 5'):
        DetectionDistiller(teacher=dict(config=demo_config_path('retinanet_teacher'), checkpoint=ckpt),
                           student=dict(config=student.to_dict()))
