"""The command line end to end: data -> train teacher -> distill -> transfer -> test, and its error handling."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from search.cli import main

from .demo_utils import ROOT, build_teacher_checkpoint, demo_batch, demo_config_path

CLI = [sys.executable, '-m', 'search.cli']


def run_cli(args, cwd, timeout=900):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def test_transfer_round_trip_matches_plain_mmdetection(tmp_path, shapes_root):
    from mmdet.apis import init_detector
    from distill_core.distiller import DetectionDistiller
    ckpt = build_teacher_checkpoint('retinanet', tmp_path)
    distiller = DetectionDistiller(
        teacher=dict(config=demo_config_path('retinanet_teacher'), checkpoint=ckpt),
        student=dict(config=demo_config_path('retinanet_student')), inherit_neck_head=True,
        distill_losses=[dict(name='fi', levels='all', loss=dict(type='FeatureImitationLoss'))])
    distiller.init_weights()
    # A freshly initialised head scores every box ~0.01, below the test threshold; a neutral bias gives
    # detections to compare.
    torch.nn.init.constant_(distiller.student.bbox_head.retina_cls.bias, 0.0)
    distiller.eval()
    distiller_ckpt = str(tmp_path / 'distiller.pth')
    meta = {'dataset_meta': {'classes': ('rectangle', 'ellipse', 'triangle')}, 'iter': 3,
            'message_hub': {'log_scalars': {}}}
    torch.save({'state_dict': distiller.state_dict(), 'meta': meta, 'optimizer': {'state': {}}}, distiller_ckpt)
    out = str(tmp_path / 'student.pth')
    assert main(['transfer', distiller_ckpt, out]) == 0
    saved = torch.load(out, map_location='cpu', weights_only=True)
    assert set(saved) == {'state_dict', 'meta'}
    assert not any(k.startswith(('teacher.', 'student.', 'distill_losses.')) for k in saved['state_dict'])
    plain = init_detector(demo_config_path('retinanet_student'), out, device='cpu')
    assert plain.dataset_meta['classes'] == ('rectangle', 'ellipse', 'triangle')
    inputs, samples = demo_batch(distiller, 'retinanet', shapes_root, split='val', batch_size=4)
    with torch.no_grad():
        ours = distiller.predict(inputs, [s.clone() for s in samples])
        theirs = plain.predict(inputs, [s.clone() for s in samples])
    for a, b in zip(ours, theirs):
        assert len(a.pred_instances) > 0
        assert torch.equal(a.pred_instances.labels, b.pred_instances.labels)
        assert torch.allclose(a.pred_instances.bboxes, b.pred_instances.bboxes)
        assert torch.allclose(a.pred_instances.scores, b.pred_instances.scores)


def test_transfer_rejects_non_distiller_checkpoint(tmp_path, capsys):
    ckpt = build_teacher_checkpoint('retinanet', tmp_path)
    assert main(['transfer', ckpt, str(tmp_path / 'x.pth')]) == 2
    assert 'no `student.*` weights' in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'x.pth')


@pytest.mark.parametrize('args, message', [
    (['train', 'configs/demo/does_not_exist.py'], 'config file not found'),
    (['test', 'configs/demo/retinanet_student.py', 'missing.pth'], 'annotation file not found'),
    (['transfer', 'missing.pth', 'out.pth'], 'distiller checkpoint not found'),
])
def test_bad_input_is_one_line_exit_2(args, message, tmp_path):
    proc = run_cli([a if not a.startswith('configs/') else osp.join(ROOT, a) for a in args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and 'Traceback' not in proc.stderr


def test_test_rejects_checkpoint_of_another_model(tmp_path, shapes_root):
    ckpt = build_teacher_checkpoint('retinanet', tmp_path, config='fcos_student')
    opts = ['--cfg-options', f'test_dataloader.dataset.data_root={shapes_root}/',
            f'test_evaluator.ann_file={shapes_root}/annotations/val.json']
    assert main(['test', demo_config_path('retinanet_student'), ckpt, '--work-dir', str(tmp_path / 'w')] + opts) == 2


@pytest.mark.slow
def test_end_to_end_teacher_distill_transfer_test(tmp_path):
    """The README's main job in small: the teacher reaches a clearly non-zero AP (pycocotools)."""
    cwd = str(tmp_path)
    proc = run_cli(['data', 'shapes', '--out', 'data/shapes', '--train', '400', '--val', '60'], cwd)
    assert proc.returncode == 0, proc.stderr
    teacher_dir = 'work_dirs/demo/retinanet_teacher'
    proc = run_cli(['train', demo_config_path('retinanet_teacher'), '--work-dir', teacher_dir,
                    '--cfg-options', 'train_cfg.max_iters=400', 'train_cfg.val_interval=400',
                    'param_scheduler.0.end=400', 'param_scheduler.0.milestones=[300]'], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    teacher_ckpt = osp.join(cwd, teacher_dir, 'final.pth')
    assert osp.isfile(teacher_ckpt)
    proc = run_cli(['test', demo_config_path('retinanet_teacher'), teacher_ckpt, '--work-dir', 'work_dirs/t',
                    '--out', 'teacher_metrics.json'], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    teacher = json.load(open(osp.join(cwd, 'teacher_metrics.json')))
    assert teacher['coco/bbox_mAP'] > 0.08, teacher   # ~0.12 at 300 iterations, ~0.6 at 1200
    # quiet by default: the console gets the metrics alone; pycocotools' table goes to the work folder
    assert json.loads(proc.stdout) == teacher
    with open(osp.join(cwd, 'work_dirs/t/console.log')) as f:
        assert 'Average Precision' in f.read()

    proc = run_cli(['train', osp.join(ROOT, 'configs/demo/distill_retinanet_fi.py'), '--work-dir', 'work_dirs/d',
                    '--cfg-options', 'train_cfg.max_iters=60', 'train_cfg.val_interval=60',
                    'param_scheduler.0.end=60', 'param_scheduler.0.milestones=[45]'], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'loss_fi_fpn0' in proc.stdout + proc.stderr
    proc = run_cli(['transfer', 'work_dirs/d/final.pth', 'student.pth'], cwd)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(['test', demo_config_path('retinanet_student'), 'student.pth', '--work-dir', 'work_dirs/s',
                    '--out', 'student_metrics.json'], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    student = json.load(open(osp.join(cwd, 'student_metrics.json')))
    assert 0.0 <= student['coco/bbox_mAP'] <= 1.0
    proc = run_cli(['test', osp.join(ROOT, 'configs/demo/distill_retinanet_fi.py'), 'work_dirs/d/final.pth',
                    '--work-dir', 'work_dirs/ds', '--out', 'distiller_metrics.json'], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    distiller = json.load(open(osp.join(cwd, 'distiller_metrics.json')))
    assert distiller['coco/bbox_mAP'] == pytest.approx(student['coco/bbox_mAP'], abs=1e-9)
