"""benchmarks/demo_table.py --config: the table of a search config's pair (heterogeneous pairs, Mask R-CNN).

Each distiller row is the config `detkds-search export` would write for the method's losses on that pair (the
pair's teacher, the proxy's strategy, the full-training schedule); a generated row trains, and a Mask R-CNN row
reports mask AP (pycocotools segm) beside box AP in the table."""
import importlib.util
import math
import os.path as osp

import pytest
from mmengine.config import Config

from search.baselines import distill_losses_of

from .demo_utils import ROOT


def _demo_table():
    spec = importlib.util.spec_from_file_location('demo_table', osp.join(ROOT, 'benchmarks', 'demo_table.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_table = _demo_table()


def _config(name):
    return osp.join(ROOT, 'configs', 'search', name)


def test_heterogeneous_pair_rows_use_the_pairs_teacher_and_the_methods_losses(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)   # paths inside the configs are relative to the folder benchmarks run in
    cfg, rows = demo_table.pair_rows(_config('demo_cascade_faster_rcnn.py'), str(tmp_path), demo_table.METHODS)
    names = [name for name, _, _, _ in rows]
    # the config's baselines (none -> the student alone), no inheritance control (the pair does not inherit),
    # and the Faster R-CNN DetKDS genome (its four inputs are all served by a cascade teacher)
    assert names == ['student alone', 'student + fgd', 'student + pkd', 'student + DetKDS (faster_rcnn_r101_r50)']
    assert rows[0][1:3] == ('configs/demo/faster_rcnn_student.py', False)
    for name, config, needs_teacher, _ in rows[1:]:
        assert needs_teacher and config.startswith(str(tmp_path / 'cascade_faster_rcnn' / 'configs'))
        full = Config.fromfile(config)
        assert full.model.type == 'DetectionDistiller'
        assert full.model.teacher.config == 'configs/demo/cascade_rcnn_teacher.py'
        assert full.model.inherit_neck_head is False
        assert full.train_cfg.max_iters == cfg.raw['full_training']['max_iters']
    method = Config.fromfile(rows[2][1]).model.distill_losses
    assert [dict(e) for e in method] == distill_losses_of(osp.join(ROOT, 'configs/distillers/pkd/pkd_demo_faster_rcnn.py'))
    before = osp.getmtime(rows[1][1])
    demo_table.pair_rows(_config('demo_cascade_faster_rcnn.py'), str(tmp_path), demo_table.METHODS)
    assert osp.getmtime(rows[1][1]) == before   # an unchanged config is not rewritten: its finished rows are reused


def test_mask_rcnn_pair_trains_a_row_and_tables_mask_ap(tmp_path, shapes_root, demo_teacher_checkpoint, monkeypatch):
    monkeypatch.chdir(ROOT)
    _, rows = demo_table.pair_rows(_config('demo_mask_rcnn.py'), str(tmp_path), ['pkd'])
    assert [name for name, _, _, _ in rows] == ['student alone', 'student + inherited neck/head only',
                                                'student + pkd']
    name, config, _, _ = rows[2]
    options = dict(demo_table.data_options(shapes_root), **{
        'model.teacher.checkpoint': demo_teacher_checkpoint('configs/demo/mask_rcnn_teacher.py'),
        'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2, 'param_scheduler': [],
        'train_dataloader.batch_size': 2, 'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False, 'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False, 'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False})
    metrics, checkpoint = demo_table.train_and_test(name, config, str(tmp_path / 'row'), options, seed=0)
    assert osp.isfile(checkpoint) and osp.isfile(tmp_path / 'row' / 'val_metrics.json')
    assert set(metrics) == {'AP', 'AP50', 'AP75', 'mask AP', 'mask AP50'}
    assert all(0.0 <= value <= 1.0 or math.isnan(value) for value in metrics.values())
    row = demo_table.summarise(name, config, [metrics, dict(metrics, **{'mask AP': metrics['mask AP'] + 0.1})])
    assert row['mask AP'] == pytest.approx(round(metrics['mask AP'] + 0.05, 3), abs=1e-3)
    table = demo_table.markdown([row], 'mask_rcnn')
    assert '| mask AP | mask AP50 |' in table.splitlines()[2] and f"{row['mask AP']:.3f} |" in table
