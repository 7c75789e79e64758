"""Search trial workers: proxy subsets, the proxy trial (reports, determinism, early rejection), the in-memory
COCO evaluation against MMDetection's CocoMetric, and the preparation of a search's data and teacher."""
import json
import math
import os
import os.path as osp

import numpy as np
import pytest
import torch

from distill_core.errors import CheckpointError, ConfigError
from distill_core.genome import Genome, Term
from search.space import Space
from workers.prepare import prepare_search_inputs
from workers.settings import check_search_config
from workers.proxy import TrialRejected, check_losses, run_proxy_trial
from workers.proxy_data import ProxyData, draw_subsets
from workers.proxy_eval import METRIC_KEYS, coco_metrics, detections_to_coco, load_coco

from .demo_utils import ROOT, build_teacher_checkpoint

torch.set_num_threads(2)

PROXY = dict(train_images=8, val_images=4, subset_seed=0, iterations=4, batch_size=2,
             optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4), grad_clip=35.0, inherit_neck_head=True,
             report_interval=2, eval_interval=2, reject=dict(check_iterations=3, max_loss=1e4))


def search_config(teacher_checkpoint, data_root, **proxy):
    return dict(teacher=dict(config='configs/demo/retinanet_teacher.py', checkpoint=teacher_checkpoint),
                student=dict(config='configs/demo/retinanet_student.py'),
                data=dict(data_root=data_root),
                proxy=dict(PROXY, **proxy))


@pytest.fixture(scope='module')
def cfg(tmp_path_factory, shapes_root):
    checkpoint = build_teacher_checkpoint('retinanet', tmp_path_factory.mktemp('teacher'))
    return search_config(checkpoint, shapes_root)


@pytest.fixture(scope='module')
def published():
    return Space.default().published['retinanet_r101_r50']   # global + fg_bg terms


@pytest.fixture(scope='module')
def trials(cfg, published):
    """Two trials with seed 0 and one with seed 1, each recording its reports."""
    out = {}
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        reports = []
        result = run_proxy_trial(cfg, published.to_json(), seed=seed, report=reports.append, base_dir=ROOT)
        out[name] = (result, reports)
    return out


# ---------------------------------------------------------------------------------------------- subsets
def test_subsets_are_disjoint_seeded_and_sized():
    train, val = draw_subsets(20, 8, 5, seed=3)
    assert (len(train), len(val)) == (8, 5) and not set(train) & set(val)
    assert set(train) | set(val) <= set(range(20))
    assert draw_subsets(20, 8, 5, seed=3) == (train, val)
    assert draw_subsets(20, 8, 5, seed=4) != (train, val)
    train, val = draw_subsets(20, 0.5, 0.25, seed=0)          # fractions of the image count
    assert (len(train), len(val)) == (10, 5)
    with pytest.raises(ConfigError, match='only 20'):
        draw_subsets(20, 15, 6, seed=0)


def test_proxy_datasets_come_from_training_annotations(cfg, shapes_root):
    data = ProxyData(cfg, check_search_config(cfg), ROOT)
    with open(osp.join(shapes_root, 'annotations', 'train.json')) as f:
        train_ids = {img['id'] for img in json.load(f)['images']}
    assert len(data.train_img_ids) == 8 and len(data.val_img_ids) == 4
    assert not set(data.train_img_ids) & set(data.val_img_ids)
    assert set(data.train_img_ids) | set(data.val_img_ids) <= train_ids
    train_ds, val_ds = data.train_dataset(), data.val_dataset()
    assert [train_ds.get_data_info(i)['img_id'] for i in range(len(train_ds))] == data.train_img_ids
    assert [val_ds.get_data_info(i)['img_id'] for i in range(len(val_ds))] == data.val_img_ids
    sample = val_ds[0]['data_samples']
    assert f'{os.sep}train{os.sep}' in sample.img_path                # training images ...
    assert 'flip' not in sample.metainfo                              # ... through the test pipeline
    assert 'flip' in train_ds[0]['data_samples'].metainfo             # training subset: train pipeline


# ---------------------------------------------------------------------------------------------- trials
def test_trial_reports_every_term_and_ap(trials):
    result, reports = trials['a']
    assert [r['iteration'] for r in reports] == [2, 4]
    assert reports == result.history and result.iterations == 4
    for entry in reports:
        for key in ('loss', 'loss_cls', 'loss_bbox', 'loss_searched_global', 'loss_searched_fg',
                    'loss_searched_bg', *METRIC_KEYS):
            assert key in entry, key
        assert all(isinstance(v, (int, float)) for v in entry.values())
        # the reported total is the sum of the loss terms (means over the interval)
        terms = sum(v for k, v in entry.items() if k.startswith('loss_'))
        assert entry['loss'] == pytest.approx(terms, rel=1e-5)
    assert set(result.metrics) == set(METRIC_KEYS)
    assert result.metrics == {k: reports[-1][k] for k in METRIC_KEYS}
    for key, value in result.metrics.items():
        assert math.isnan(value) or 0.0 <= value <= 1.0, (key, value)
    assert not math.isnan(result.metrics['AP'])
    assert result.wall_time > 0


def test_trial_is_deterministic_for_a_seed(trials):
    (a, reports_a), (b, reports_b), (c, reports_c) = trials['a'], trials['b'], trials['c']
    assert json.dumps(reports_a) == json.dumps(reports_b)      # bit-identical losses and APs (nan-safe)
    assert json.dumps(a.metrics) == json.dumps(b.metrics)
    assert reports_a[0]['loss'] != reports_c[0]['loss']       # another seed: other init, batches and flips


def test_degenerate_genome_is_rejected_before_any_update(cfg):
    exploding = Genome((Term('global', transforms=(), distance='l2', weight=1e12),))
    reports = []
    with pytest.raises(TrialRejected) as info:
        run_proxy_trial(cfg, exploding, seed=0, report=reports.append, base_dir=ROOT)
    assert info.value.reason.startswith('exploding loss_searched_global')
    assert info.value.reason.endswith('at iteration 1')
    assert reports == []


def test_reject_rules():
    settings = check_search_config(search_config('t.pth', 'data'))   # check_iterations=3, max_loss=1e4
    check_losses({'loss': 5.0, 'loss_searched_fg': 1e3, 'loss_cls': 1.0}, 1, settings)
    with pytest.raises(TrialRejected, match='^non-finite loss_searched_bg at iteration 2$'):   # the term,
        check_losses({'loss': float('nan'), 'loss_searched_bg': float('nan')}, 2, settings)  # not the total
    with pytest.raises(TrialRejected, match='non-finite loss_cls'):      # any term, at any iteration
        check_losses({'loss_cls': float('inf')}, 50, settings)
    with pytest.raises(TrialRejected, match='exploding loss_searched_fg'):
        check_losses({'loss_searched_fg': 2e4}, 3, settings)
    check_losses({'loss_searched_fg': 2e4}, 4, settings)           # large but finite after the check window
    check_losses({'loss_cls': 2e4}, 1, settings)                   # only distillation terms can explode
    check_losses({'searched_metric': float('nan')}, 1, settings)   # logged metrics are not losses


class StopTrial(Exception):
    pass


def test_report_exception_stops_the_trial(cfg):
    """The baseline (no genome) reports detection terms only; a raising report stops it at once."""
    calls = []

    def report(entry):
        calls.append(entry)
        raise StopTrial('scheduler says stop')

    with pytest.raises(StopTrial, match='scheduler says stop'):
        run_proxy_trial(search_config(cfg['teacher']['checkpoint'], cfg['data']['data_root'], report_interval=1,
                                      eval_interval=None),
                        None, seed=0, report=report, base_dir=ROOT)
    assert len(calls) == 1 and calls[0]['iteration'] == 1
    assert 'loss_cls' in calls[0] and not any(k.startswith('loss_searched') for k in calls[0])


def test_explicit_distill_losses_are_trained(cfg):
    """``distill_losses`` (a published method under the proxy, search/baselines.py) reach the loss dict."""
    calls = []

    def report(entry):
        calls.append(entry)
        raise StopTrial('enough')

    with pytest.raises(StopTrial):
        run_proxy_trial(search_config(cfg['teacher']['checkpoint'], cfg['data']['data_root'], report_interval=1),
                        None, seed=0, report=report, base_dir=ROOT,
                        distill_losses=[dict(name='fi', levels='all', loss=dict(type='FeatureImitationLoss'))])
    assert {f'loss_fi_fpn{i}' for i in range(5)} <= set(calls[0])


def test_lr_steps_follow_mmengine_multisteplr(cfg, monkeypatch):
    """``proxy.lr_steps`` decays the lr as the full schedule's MultiStepLR (by iteration) does at the same
    fractions, and the trained candidates' optimizers really run at that lr."""
    from mmengine.optim.scheduler import MultiStepLR
    settings = check_search_config(dict(cfg, proxy=dict(cfg['proxy'], iterations=8, lr_steps=[0.5, 0.75],
                                                        lr_gamma=0.5)))
    assert settings.lr_steps == (0.5, 0.75)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = MultiStepLR(optimizer, milestones=[4, 6], gamma=0.5, by_epoch=False)
    expected = []
    for _ in range(8):   # mmengine: the lr of each step, then the scheduler steps
        expected.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    assert [settings.lr_factor(i) for i in range(1, 9)] == pytest.approx(expected)
    assert expected == [1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25]
    assert check_search_config(cfg).lr_factor(1000) == 1.0   # no steps: constant
    for bad in ([0.75, 0.5], [1.0], [0], 0.5):
        with pytest.raises(ConfigError, match=r'proxy\.lr_steps: expected increasing fractions'):
            check_search_config(dict(cfg, proxy=dict(cfg['proxy'], lr_steps=bad)))
    with pytest.raises(ConfigError, match=r'proxy\.lr_gamma'):
        check_search_config(dict(cfg, proxy=dict(cfg['proxy'], lr_steps=[0.5], lr_gamma=0)))

    from workers import proxy as proxy_module
    seen, original = [], proxy_module._Candidate.train_step

    def recording_step(self, *args):   # the lr each real step just used
        original(self, *args)
        seen.append(self.optim_wrapper.param_groups[0]['lr'])

    monkeypatch.setattr(proxy_module._Candidate, 'train_step', recording_step)
    run_proxy_trial(search_config(cfg['teacher']['checkpoint'], cfg['data']['data_root'], iterations=4,
                                  lr_steps=[0.5], eval_interval=None), None, seed=0, base_dir=ROOT)
    assert seen == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])


# ---------------------------------------------------------------------------------------------- evaluation
def test_coco_evaluation_matches_cocometric_on_the_same_images(shapes_root):
    """Jittered GT boxes as predictions: our numbers equal CocoMetric's (restricted to the same images, to its
    3 decimals); unrestricted, CocoMetric would also count the images never predicted."""
    from mmdet.evaluation import CocoMetric
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    ann_file = osp.join(shapes_root, 'annotations', 'train.json')
    gt = load_coco(ann_file)
    img_ids, cat_ids = sorted(gt.getImgIds())[:6], sorted(gt.getCatIds())
    rng = np.random.default_rng(0)
    samples = []
    for img_id in img_ids:
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[img_id]))
        xywh = np.array([a['bbox'] for a in anns], dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) + rng.normal(0, 2.0, (len(anns), 4))
        labels = [cat_ids.index(a['category_id']) for a in anns]
        sample = DetDataSample(metainfo=dict(img_id=img_id, ori_shape=(128, 128)))
        sample.pred_instances = InstanceData(bboxes=torch.tensor(xyxy, dtype=torch.float32),
                                             scores=torch.tensor(rng.uniform(0.1, 1, len(anns))).float(),
                                             labels=torch.tensor(labels))
        samples.append(sample)
    ours = coco_metrics(gt, detections_to_coco(samples, cat_ids), img_ids, cat_ids, 'bbox')

    def cocometric(restrict):
        metric = CocoMetric(ann_file=ann_file, metric='bbox')
        metric.dataset_meta = dict(classes=('rectangle', 'ellipse', 'triangle'))
        if restrict:
            metric.img_ids = img_ids
        metric.process({}, [s.to_dict() for s in samples])
        return metric.evaluate(len(samples))

    theirs = cocometric(True)
    names = dict(AP='mAP', AP50='mAP_50', AP75='mAP_75', APs='mAP_s', APm='mAP_m', APl='mAP_l')
    assert 0.3 < ours['AP'] < 1.0
    for key, name in names.items():
        expected = theirs[f'coco/bbox_{name}']
        assert (math.isnan(ours[key]) and expected == -1) or round(ours[key], 3) == pytest.approx(expected), key
    assert cocometric(False)['coco/bbox_mAP'] < theirs['coco/bbox_mAP']


def test_no_detections_scores_zero(shapes_root):
    gt = load_coco(osp.join(shapes_root, 'annotations', 'train.json'))
    metrics = coco_metrics(gt, [], sorted(gt.getImgIds())[:3], sorted(gt.getCatIds()), 'bbox')
    assert metrics['AP'] == 0.0 and metrics['AP50'] == 0.0


# ---------------------------------------------------------------------------------------------- config + prepare
def test_check_search_config_rejects_bad_sections(cfg):
    with pytest.raises(ConfigError, match=r'my\.py: proxy\.iteratons: unknown key'):
        check_search_config(dict(cfg, proxy=dict(cfg['proxy'], iteratons=3)), 'my.py')
    with pytest.raises(ConfigError, match=r'proxy\.iterations: expected an integer >= 1'):
        check_search_config(dict(cfg, proxy=dict(cfg['proxy'], iterations=-5)), 'my.py')
    with pytest.raises(ConfigError, match=r'teacher\.ckpt'):
        check_search_config(dict(cfg, teacher=dict(cfg['teacher'], ckpt='x')), 'my.py')
    with pytest.raises(ConfigError, match=r'data\.root'):
        check_search_config(dict(cfg, data=dict(root='x')), 'my.py')
    with pytest.raises(ConfigError, match=r'proxy\.val_images: train_images \+ val_images = 1\.2'):
        check_search_config(dict(cfg, proxy=dict(cfg['proxy'], train_images=0.7, val_images=0.5)), 'my.py')
    with pytest.raises(ConfigError, match=r'proxy\.train_images'):
        check_search_config(dict(cfg, proxy=dict(cfg['proxy'], train_images=1.5)), 'my.py')
    settings = check_search_config(dict(cfg, proxy=dict(train_images=4, val_images=2, iterations=3, batch_size=2)))
    assert settings.eval_interval is None and settings.reject.max_loss == 1e4 and settings.eval_batch_size == 2


def test_prepare_errors(cfg, tmp_path):
    with pytest.raises(ConfigError, match=r'student\.config: config file not found: .*nope\.py'):
        prepare_search_inputs(dict(cfg, student=dict(config='configs/demo/nope.py')), ROOT, log=lambda _: None)
    missing = str(tmp_path / 'missing.pth')
    with pytest.raises(CheckpointError, match=f'teacher.checkpoint not found: {missing}'):
        prepare_search_inputs(dict(cfg, teacher=dict(cfg['teacher'], checkpoint=missing)), ROOT,
                              log=lambda _: None)
    with pytest.raises(ConfigError, match='only 24'):   # counts larger than the dataset (24 training images)
        prepare_search_inputs(dict(cfg, proxy=dict(cfg['proxy'], train_images=20, val_images=5)), ROOT,
                              log=lambda _: None)
    prepare_search_inputs(cfg, ROOT, log=lambda _: None)   # everything present: nothing to do


@pytest.mark.slow
def test_prepare_generates_data_and_trains_the_teacher_once(tmp_path):
    from distill_core.checkpoint import load_matching_weights
    from distill_core.model_config import build_in_mmdet_scope, resolve_model_config
    teacher_config = osp.join(ROOT, 'configs', 'demo', 'retinanet_teacher.py')
    search = dict(
        teacher=dict(config=teacher_config, checkpoint='ckpt/teacher.pth',
                     train_if_missing=dict(work_dir='work/teacher', cfg_options={
                         'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2, 'train_dataloader.batch_size': 2})),
        student=dict(config=osp.join(ROOT, 'configs', 'demo', 'retinanet_student.py')),
        data=dict(generate_shapes=dict(out='data/shapes', num_train=8, num_val=3, size=64, seed=0)),
        proxy=dict(PROXY, train_images=4, val_images=2))
    lines = []
    prepare_search_inputs(search, str(tmp_path), log=lines.append)   # relative paths resolve in tmp_path
    assert osp.isfile(tmp_path / 'data' / 'shapes' / 'annotations' / 'val.json')
    checkpoint = tmp_path / 'ckpt' / 'teacher.pth'
    assert osp.isfile(checkpoint) and osp.isfile(tmp_path / 'work' / 'teacher' / 'final.pth')
    assert any('generating' in line for line in lines) and any('training' in line for line in lines)
    teacher = build_in_mmdet_scope(resolve_model_config(teacher_config, 'teacher'))
    load_matching_weights(teacher, str(checkpoint), 'teacher')   # a complete checkpoint of that config
    mtime = os.stat(checkpoint).st_mtime_ns
    lines.clear()
    prepare_search_inputs(search, str(tmp_path), log=lines.append)
    assert os.stat(checkpoint).st_mtime_ns == mtime and lines == []
