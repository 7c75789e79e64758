"""Pretrained demo backbones: made once by the preparation path, loaded strictly into students and teachers,
clear errors for missing, corrupt or mismatched files; quiet, visible preparation."""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from distill_core.errors import CheckpointError
from distill_core.model_config import build_in_mmdet_scope
from workers.backbone_pretrain import CropSampler, pretrain_backbone
from workers.prepare import backbone_checkpoint, ensure_backbone
from workers.settings import PretrainSettings

from .demo_utils import demo_config_path

TINY = PretrainSettings(iterations=2, batch_size=8, val_crops=8)


def _config_naming(tmp_path, base: str, checkpoint: str) -> str:
    """A config inheriting a demo detector whose backbone loads ``checkpoint``."""
    path = tmp_path / f'{base}_custom.py'
    path.write_text(f"_base_ = ['{demo_config_path(base)}']\n"
                    f"model = dict(backbone=dict(init_cfg=dict(type='PretrainedBackbone', "
                    f"checkpoint='{checkpoint}')))\n")
    return str(path)


def _built(config: str):
    model = build_in_mmdet_scope(Config.fromfile(config).model)
    model.init_weights()
    return model


@pytest.mark.parametrize('role', ['student', 'teacher'])
def test_demo_detectors_start_from_their_backbone_checkpoint(role, demo_backbones):
    config = demo_config_path(f'faster_rcnn_{role}')
    path = backbone_checkpoint(config, '.')
    assert path.startswith(demo_backbones) and osp.isfile(path)
    saved = torch.load(path, weights_only=True)
    model = _built(config)
    state = model.backbone.state_dict()
    assert set(saved['state_dict']) == set(state)
    for key, value in saved['state_dict'].items():
        assert torch.equal(state[key], value), key
    assert saved['meta']['arch']['base_channels'] == (16 if role == 'student' else 64)


def test_crops_are_labelled_objects_and_background(shapes_root):
    import random
    sampler = CropSampler(shapes_root, 'train', [0, 0, 0], [1, 1, 1], True)
    crops, labels = sampler.batch(random.Random(0), 16, 32, 0.25)
    assert crops.shape == (16, 3, 32, 32)
    assert labels.tolist().count(sampler.num_classes - 1) == 4       # a quarter background
    assert set(labels[:12].tolist()) <= set(range(sampler.num_classes - 1))


def test_pretraining_learns_and_is_made_once_by_the_preparation_path(tmp_path, shapes_root):
    config = _config_naming(tmp_path, 'retinanet_student', 'bb/student.pth')   # relative: under base_dir
    lines = []
    made = ensure_backbone(config, str(tmp_path), shapes_root, dict(iterations=3, batch_size=8, val_crops=8),
                           lines.append, 'student')
    assert made == str(tmp_path / 'bb' / 'student.pth') and osp.isfile(made)
    assert any('pretraining it' in line for line in lines)
    assert any('3/3 it (100 %)' in line for line in lines), lines          # progress lines with the count
    assert any('held-out crop accuracy' in line for line in lines)
    stamp = os.stat(made).st_mtime_ns
    again = []
    assert ensure_backbone(config, str(tmp_path), shapes_root, {}, again.append, 'student') == made
    assert again == [] and os.stat(made).st_mtime_ns == stamp              # cached: not made twice
    with pytest.raises(CheckpointError, match='pretrained backbone checkpoint not found: .*missing.pth'):
        ensure_backbone(_config_naming(tmp_path, 'retinanet_teacher', 'missing.pth'), str(tmp_path), shapes_root,
                        None, print, 'teacher')


def test_longer_pretraining_beats_chance(tmp_path, shapes_root):
    meta = pretrain_backbone(demo_config_path('retinanet_student'), shapes_root, str(tmp_path / 'b.pth'),
                             PretrainSettings(iterations=60, batch_size=32, val_crops=64, warmup=5),
                             log=lambda line: None)
    assert meta['val_accuracy'] > meta['chance_accuracy']


def test_missing_corrupt_and_mismatched_backbones_are_one_line_errors(tmp_path, demo_backbones):
    missing = _config_naming(tmp_path, 'retinanet_student', str(tmp_path / 'none.pth'))
    with pytest.raises(CheckpointError, match=f'not found: {tmp_path}/none.pth'):
        _built(missing)
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match=f'cannot load pretrained backbone checkpoint {corrupt}'):
        _built(_config_naming(tmp_path, 'retinanet_student', str(corrupt)))
    wide = osp.join(demo_backbones, 'resnet18_w64.pth')   # the teacher's width in a student
    with pytest.raises(CheckpointError) as info:
        _built(_config_naming(tmp_path, 'retinanet_student', wide))
    assert f'pretrained backbone checkpoint {wide} does not match' in str(info.value)
    assert 'shape-mismatched' in str(info.value) and '\n' not in str(info.value)


def test_teacher_training_prints_progress_lines_not_the_framework_log(tmp_path, shapes_root, capsys):
    from workers.full_training import train
    from workers.prepare import _teacher_data_options
    config = demo_config_path('retinanet_teacher')
    options = _teacher_data_options(config, shapes_root)
    options.update({'train_cfg.max_iters': 4, 'train_cfg.val_interval': 4, 'train_dataloader.batch_size': 2,
                    'param_scheduler': []})
    lines = []
    train(config, work_dir=str(tmp_path / 'teacher'), cfg_options=options,
          progress=dict(label='teacher', log=lines.append))
    console = capsys.readouterr().out
    assert 'Config:' not in console and 'Hooks will be executed' not in console
    assert 'Average Precision' not in console           # pycocotools' table went to evaluation.log
    assert [line for line in lines if '4/4 it (100 %)' in line]
    assert any('val bbox_mAP' in line for line in lines) and lines[-1].startswith('[prepare] teacher: done in')
    logs = [osp.join(root, f) for root, _, files in os.walk(tmp_path / 'teacher') for f in files if f.endswith('.log')]
    text = ''.join(open(path).read() for path in logs)
    assert 'Config:' in text and 'Average Precision' in text   # the full log is kept in the work folder


def test_a_diverging_training_stops_with_a_one_line_error_and_no_final_checkpoint(tmp_path, shapes_root):
    """An absurd learning rate makes the weights non-finite within a few steps: `train` stops at the next check
    (every 10 iterations) naming the non-finite terms, instead of training NaN weights to the end."""
    from distill_core.errors import TrainingError
    from workers.full_training import train
    from workers.prepare import _teacher_data_options
    config = demo_config_path('retinanet_student')
    options = _teacher_data_options(config, shapes_root)
    options.update({'train_cfg.max_iters': 40, 'train_cfg.val_interval': 40, 'train_dataloader.batch_size': 2,
                    'param_scheduler': [], 'optim_wrapper.optimizer.lr': 1e30, 'optim_wrapper.clip_grad': None})
    with pytest.raises(TrainingError) as info:
        train(config, work_dir=str(tmp_path / 'diverged'), cfg_options=options)
    message = str(info.value)
    assert message.startswith('training diverged by iteration '), message
    assert 'loss = nan' in message or 'loss = inf' in message, message
    assert int(message.split('iteration ')[1].split(':')[0]) in (10, 20, 30) and '\n' not in message
    assert 'loss_cls = ' in message and not osp.exists(tmp_path / 'diverged' / 'final.pth')
