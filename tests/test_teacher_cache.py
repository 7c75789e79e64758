"""Teacher feature cache of the proxy training subset (workers/teacher_cache.py): cached features equal the
teacher's forward for both flip states (RetinaNet and Faster R-CNN demo pairs), eligibility and its reasons, the
'auto' decision, one locked atomic build shared by concurrent trials, stale-key protection, and a proxy trial with
the cache reproducing one without it."""
import copy
import json
import multiprocessing
import os
import os.path as osp
import shutil
import time

import numpy as np
import pytest
import torch

from distill_core.errors import ConfigError
from search.space import Space
from workers.settings import check_search_config
from workers.progress import quiet_mmengine
from workers.proxy import build_distiller, run_proxy_trial
from workers.proxy_data import ProxyData
from workers.teacher_cache import (INDEX_FILE, CacheLayout, Eligibility, cache_eligibility, cache_folder, cache_key,
                                   decide, open_or_build, open_teacher_cache, pipeline_obstacle)

from .demo_utils import ROOT, build_teacher_checkpoint
from .test_proxy_group import TeacherForwardCounter
from .test_workers_proxy import search_config

torch.set_num_threads(1)

CACHED_PROXY = dict(train_images=8, val_images=4, iterations=6, batch_size=2, report_interval=2, eval_interval=6,
                    teacher_cache=True)


def pair_config(family, checkpoint, data_root, **proxy):
    cfg = search_config(checkpoint, data_root, **dict(CACHED_PROXY, **proxy))
    cfg['teacher'] = dict(config=f'configs/demo/{family}_teacher.py', checkpoint=checkpoint)
    cfg['student'] = dict(config=f'configs/demo/{family}_student.py')
    return cfg


class Pair:
    """A demo pair's search config, one built distiller (train mode, as in a trial) and its proxy data."""

    def __init__(self, family, tmp_path, shapes_root, **proxy):
        self.checkpoint = build_teacher_checkpoint(family, tmp_path)
        self.cfg = pair_config(family, self.checkpoint, shapes_root, **proxy)
        self.settings = check_search_config(self.cfg)
        with quiet_mmengine():
            self.model = build_distiller(self.cfg, None, self.settings, ROOT)
            self.data = ProxyData(self.cfg, self.settings, ROOT)
        self.model.train()
        self.cache_dir = str(tmp_path / 'teacher_cache')


@pytest.fixture(scope='module')
def retinanet(tmp_path_factory, shapes_root):
    return Pair('retinanet', tmp_path_factory.mktemp('retinanet'), shapes_root)


@pytest.fixture(scope='module')
def faster_rcnn(tmp_path_factory, shapes_root):
    return Pair('faster_rcnn', tmp_path_factory.mktemp('faster_rcnn'), shapes_root)


# ---------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize('family', ['retinanet', 'faster_rcnn'])
def test_cached_features_equal_the_teacher_forward_for_both_flips(family, request):
    pair = request.getfixturevalue(family)
    cache, reason = open_teacher_cache(pair.cfg, pair.settings, pair.data, pair.model, pair.cache_dir, 1, ROOT)
    assert cache is not None, reason
    assert reason.startswith('proxy.teacher_cache is True')
    assert cache.img_ids == pair.data.train_img_ids and cache.padded_shape == (128, 128)
    # per level [num_images, 2 flips, C, H, W]: the FPN strides of a 128 px input
    assert [level.shape[:2] for level in cache.levels] == [(8, 2)] * len(cache.levels)
    assert [level.shape[-1] for level in cache.levels][:3] == [32, 16, 8]

    batches = pair.data.train_batches(seed=3)   # the trial's own loader: random flips drawn per sample
    flips_seen = set()
    for _ in range(4):
        batch = pair.model.data_preprocessor(next(batches), True)
        reference = pair.model.teacher_forward(batch['inputs'])
        cached = cache.teacher_outputs(pair.model, batch)
        flips_seen.update(bool(s.metainfo['flip']) for s in batch['data_samples'])
        assert torch.equal(cached.inputs, reference.inputs)
        assert len(cached.feats) == len(reference.feats)
        for ours, theirs in zip(cached.feats, reference.feats):
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert flips_seen == {False, True}
    # a flipped image's cached features are not its unflipped ones (the flip state is really picked per sample)
    assert not np.allclose(cache.levels[0][0, 0], cache.levels[0][0, 1])
    cache.close()


# ---------------------------------------------------------------------------------------------- eligibility
@pytest.mark.parametrize('transform, culprit', [
    (dict(type='PhotoMetricDistortion'), 'PhotoMetricDistortion'),
    (dict(type='RandomResize', scale=(128, 128), ratio_range=(0.8, 1.2), keep_ratio=True), 'RandomResize'),
    (dict(type='RandomCrop', crop_size=(96, 96)), 'RandomCrop'),
    (dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']), 'only horizontal flips'),
])
def test_pipeline_with_a_random_transform_is_not_eligible(transform, culprit):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True), transform,
                dict(type='PackDetInputs')]
    assert culprit in pipeline_obstacle(pipeline)
    demo = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale=(128, 128), keep_ratio=True), dict(type='RandomFlip', prob=0.5),
            dict(type='PackDetInputs')]
    assert pipeline_obstacle(demo) is None
    no_flip_key = demo[:-1] + [dict(type='PackDetInputs', meta_keys=('img_id', 'img_shape'))]
    assert 'flip' in pipeline_obstacle(no_flip_key)


def test_random_transform_in_the_student_config_and_true_setting_is_a_config_error(retinanet, tmp_path):
    student = tmp_path / 'student_photometric.py'
    student.write_text(f"""
_base_ = '{ROOT}/configs/demo/retinanet_student.py'
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True), dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]))
""")
    cfg = dict(retinanet.cfg, student=dict(config=str(student)))
    settings = check_search_config(cfg)
    data = ProxyData(cfg, settings, ROOT)
    eligibility = cache_eligibility(data, retinanet.model, 4.0)
    assert not eligibility.eligible and 'PhotoMetricDistortion' in eligibility.reason
    with pytest.raises(ConfigError, match=r'proxy\.teacher_cache: True.*PhotoMetricDistortion'):
        open_teacher_cache(cfg, settings, data, retinanet.model, str(tmp_path / 'cache'), 100, ROOT)
    auto = check_search_config(dict(cfg, proxy=dict(cfg['proxy'], teacher_cache='auto')))
    cache, reason = open_teacher_cache(cfg, auto, data, retinanet.model, str(tmp_path / 'cache'), 100, ROOT)
    assert cache is None and reason.startswith('not eligible') and 'PhotoMetricDistortion' in reason
    assert not osp.exists(tmp_path / 'cache')


def test_mixed_image_sizes_are_not_eligible(retinanet, shapes_root, tmp_path):
    """Half the images declared 128 x 96: keep-ratio Resize to (128, 128) keeps them at 96 px wide, padded to 96."""
    root = tmp_path / 'mixed'
    os.makedirs(root / 'annotations')
    os.symlink(osp.join(shapes_root, 'train'), root / 'train')
    with open(osp.join(shapes_root, 'annotations', 'train.json')) as f:
        ann = json.load(f)
    for image in ann['images'][::2]:
        image['width'] = 96
    (root / 'annotations' / 'train.json').write_text(json.dumps(ann))
    cfg = dict(retinanet.cfg, data=dict(data_root=str(root)))
    data = ProxyData(cfg, retinanet.settings, ROOT)
    eligibility = cache_eligibility(data, retinanet.model, 4.0)
    assert not eligibility.eligible
    assert 'different padded input shapes' in eligibility.reason and '(128, 96)' in eligibility.reason


def test_image_records_already_loaded_spare_the_annotation_file(retinanet):
    """A trial passes the COCO image records it loaded: the same verdict, without reading the file again."""
    from workers.proxy_eval import load_coco
    images = load_coco(retinanet.data.ann_file).imgs
    expected = cache_eligibility(retinanet.data, retinanet.model, 4.0)
    data = copy.copy(retinanet.data)
    data.ann_file = '/nonexistent/train.json'   # would raise if it were opened
    assert cache_eligibility(data, retinanet.model, 4.0, images) == expected


def test_too_large_a_cache_is_not_eligible(retinanet):
    eligibility = cache_eligibility(retinanet.data, retinanet.model, 4.0)
    assert eligibility.eligible
    # 8 images x 2 flips x 64 channels x (32^2 + 16^2 + 8^2 + 4^2 + 2^2) x 4 bytes
    assert eligibility.layout.nbytes == 8 * 2 * 64 * (1024 + 256 + 64 + 16 + 4) * 4
    small = cache_eligibility(retinanet.data, retinanet.model, 1e-3)
    assert not small.eligible
    assert 'proxy.teacher_cache_max_gb = 0.001' in small.reason and '0.00559 GB' in small.reason


def test_auto_turns_the_cache_on_only_where_it_pays():
    settings = check_search_config(dict(
        teacher=dict(config='t.py', checkpoint='t.pth'), student=dict(config='s.py'),
        proxy=dict(train_images=8, val_images=4, iterations=4, batch_size=2)))
    assert settings.teacher_cache == 'auto' and settings.teacher_cache_max_gb == 4.0
    eligible = Eligibility(True, 'ok', CacheLayout(8, (128, 128), ((64, 32, 32),)))
    # build: 2 flips x 8 images = 16 image-forwards; one run saves 4 x 2 = 8, two 16 (not more), three 24
    assert decide(settings, eligible, 1)[0] is False
    assert decide(settings, eligible, 2)[0] is False
    use, reason = decide(settings, eligible, 3)
    assert use and reason.startswith('pays: 3 run(s) x 4 iterations x batch 2 = 24') and '16 to build' in reason
    assert decide(settings, Eligibility(False, 'RandomCrop in ...'), 100) == (False, 'not eligible: RandomCrop in ...')
    off = check_search_config(dict(
        teacher=dict(config='t.py', checkpoint='t.pth'), student=dict(config='s.py'),
        proxy=dict(train_images=8, val_images=4, iterations=4, batch_size=2, teacher_cache=False)))
    assert decide(off, eligible, 100) == (False, 'proxy.teacher_cache is False')


@pytest.mark.parametrize('key, value, message', [
    ('teacher_cache', 'yes', 'expected "auto", True or False'),
    ('teacher_cache', 1, 'expected "auto", True or False'),
    ('teacher_cache_max_gb', 0, 'expected a positive number of GB'),
    ('teacher_cache_max_gb', '4', 'expected a positive number of GB'),
])
def test_cache_settings_are_validated(key, value, message):
    cfg = dict(teacher=dict(config='t.py', checkpoint='t.pth'), student=dict(config='s.py'),
               proxy={'train_images': 8, 'val_images': 4, 'iterations': 4, 'batch_size': 2, key: value})
    with pytest.raises(ConfigError, match=rf'proxy\.{key}: {message}'):
        check_search_config(cfg)


# ---------------------------------------------------------------------------------------------- locked atomic build
def _toy_build(counter_file, value, seconds=0.0):
    """A build writing a one-level cache filled with ``value``; each run appends a line to ``counter_file``."""
    def build(folder):
        with open(counter_file, 'a') as f:
            f.write(f'{os.getpid()}\n')
        time.sleep(seconds)
        array = np.lib.format.open_memmap(osp.join(folder, 'fpn0.npy'), mode='w+', dtype=np.float32,
                                          shape=(2, 2, 1, 1, 1))
        array[:] = value
        array.flush()
        index = dict(key='k' * 64, img_ids=[1, 2], padded_shape=[32, 32],
                     levels=[dict(file='fpn0.npy', shape=[2, 2, 1, 1, 1])])
        with open(osp.join(folder, INDEX_FILE), 'w') as f:
            json.dump(index, f)
    return build


def _open_in_child(cache_dir, counter_file, value, barrier, results):
    barrier.wait()
    cache = open_or_build(cache_dir, 'k' * 64, _toy_build(counter_file, value, seconds=0.5))
    results.put((cache.built_here, cache.folder, float(cache.levels[0][0, 0, 0, 0, 0])))


def test_two_processes_building_at_once_build_once_and_read_the_same(tmp_path):
    cache_dir, counter = str(tmp_path / 'cache'), str(tmp_path / 'builds.txt')
    context = multiprocessing.get_context('fork')
    barrier, results = context.Barrier(2), context.Queue()
    children = [context.Process(target=_open_in_child, args=(cache_dir, counter, value, barrier, results))
                for value in (1.0, 2.0)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert len(open(counter).read().split()) == 1                 # one build
    assert sorted(built for built, _, _ in outcomes) == [False, True]
    assert len({folder for _, folder, _ in outcomes}) == 1         # both read the same folder...
    assert len({value for _, _, value in outcomes}) == 1           # ...and the same (the builder's) features
    assert sorted(os.listdir(cache_dir)) == sorted([osp.basename(outcomes[0][1]), osp.basename(outcomes[0][1])
                                                   + '.lock'])   # no temporary folder left


def test_a_leftover_temporary_folder_is_ignored_and_a_failed_build_leaves_nothing(tmp_path):
    cache_dir, counter = str(tmp_path / 'cache'), str(tmp_path / 'builds.txt')
    name = osp.basename(cache_folder(cache_dir, 'k' * 64))
    leftover = osp.join(cache_dir, f'.{name}.tmp-999-dead')   # a crashed build that had even written its index
    os.makedirs(leftover)
    _toy_build(str(tmp_path / 'ignored.txt'), 9.0)(leftover)

    def crashing(folder):
        _toy_build(counter, 5.0)(folder)
        raise RuntimeError('killed mid-build')

    with pytest.raises(RuntimeError, match='mid-build'):
        open_or_build(cache_dir, 'k' * 64, crashing)
    assert not osp.exists(cache_folder(cache_dir, 'k' * 64))
    cache = open_or_build(cache_dir, 'k' * 64, _toy_build(counter, 3.0))
    assert cache.built_here and float(cache.levels[0][1, 1, 0, 0, 0]) == 3.0   # not the leftover's 9
    assert [entry for entry in os.listdir(cache_dir) if '.tmp-' in entry] == []
    again = open_or_build(cache_dir, 'k' * 64, _toy_build(counter, 4.0))
    assert not again.built_here and float(again.levels[0][0, 0, 0, 0, 0]) == 3.0
    assert len(open(counter).read().split()) == 2   # the crashed build and the good one; the reopen built nothing


# ---------------------------------------------------------------------------------------------- stale keys
def test_a_changed_checkpoint_subset_or_precision_changes_the_cache_folder(retinanet, tmp_path):
    checkpoint = str(tmp_path / 'teacher.pth')
    shutil.copyfile(retinanet.checkpoint, checkpoint)
    cfg = dict(retinanet.cfg, teacher=dict(retinanet.cfg['teacher'], checkpoint=checkpoint))
    key = cache_key(cfg, retinanet.data, ROOT)
    assert cache_key(cfg, retinanet.data, ROOT) == key   # deterministic
    assert cache_key(cfg, retinanet.data, ROOT, 'bfloat16') != key   # a bfloat16 teacher forward (proxy.amp)
    state = torch.load(checkpoint, weights_only=False)
    first = next(k for k in state['state_dict'] if k.startswith('backbone.'))
    state['state_dict'][first] = state['state_dict'][first] + 1.0   # a retrained teacher, same file size
    torch.save(state, checkpoint)
    retrained = cache_key(cfg, retinanet.data, ROOT)
    assert retrained != key
    assert cache_folder('c', retrained) != cache_folder('c', key)
    other_subset = dict(cfg, proxy=dict(cfg['proxy'], subset_seed=1))
    data = ProxyData(other_subset, check_search_config(other_subset), ROOT)
    assert data.train_img_ids != retinanet.data.train_img_ids
    assert cache_key(other_subset, data, ROOT) not in (key, retrained)
    other_teacher = dict(cfg, teacher=dict(cfg['teacher'], config='configs/demo/retinanet_student.py'))
    assert cache_key(other_teacher, retinanet.data, ROOT) != retrained


# ---------------------------------------------------------------------------------------------- the proxy trial
def test_proxy_trial_with_the_cache_equals_the_trial_without_it(retinanet, monkeypatch):
    genome = Space.default().published['retinanet_r101_r50'].to_json()
    plain_cfg = dict(retinanet.cfg, proxy=dict(retinanet.cfg['proxy'], teacher_cache=False))
    counter = TeacherForwardCounter(monkeypatch)
    plain_reports = []
    plain = run_proxy_trial(plain_cfg, genome, seed=1, report=plain_reports.append, base_dir=ROOT,
                            teacher_cache_dir=retinanet.cache_dir)
    assert counter.calls == 6   # one teacher forward per step
    # 'auto' on a standalone trial (expected_trials=1) builds nothing: 6 x 2 = 12 forwards < 2 x 8 to build...
    fresh_dir = retinanet.cache_dir + '_fresh'
    auto_cfg = dict(retinanet.cfg, proxy=dict(retinanet.cfg['proxy'], teacher_cache='auto'))
    settings = check_search_config(auto_cfg)
    assert open_teacher_cache(auto_cfg, settings, retinanet.data, retinanet.model, fresh_dir, 1, ROOT)[0] is None
    assert not osp.exists(fresh_dir)
    # ...but reads the search's cache once built (somebody paid: reading is free): no teacher forward at all
    open_teacher_cache(retinanet.cfg, retinanet.settings, retinanet.data, retinanet.model, retinanet.cache_dir, 1,
                       ROOT)[0].close()
    folder = cache_folder(retinanet.cache_dir, cache_key(auto_cfg, retinanet.data, ROOT))
    assert osp.isfile(osp.join(folder, INDEX_FILE))
    counter.calls = 0
    cached_reports = []
    cached = run_proxy_trial(auto_cfg, genome, seed=1, report=cached_reports.append, base_dir=ROOT,
                             teacher_cache_dir=retinanet.cache_dir)
    assert counter.calls == 0
    assert [r['iteration'] for r in cached_reports] == [2, 4, 6]
    for ours, theirs in zip(cached_reports, plain_reports):
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), key
    assert cached.metrics == pytest.approx(plain.metrics, rel=1e-5, abs=1e-7, nan_ok=True)
    assert cached.iterations == plain.iterations == 6
