"""The detector configs: demo pairs on the shapes data (build, train one step, predict) and the COCO pairs."""
import ast
import json
import glob
import os
import os.path as osp
from urllib.parse import unquote

import pytest
import torch
import yaml
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.runner import Runner

import distill_core  # noqa: F401  (registers DetectionDistiller and the losses)
from workers.full_training import use_data_root

from .demo_utils import DEMO_FAMILIES, ROOT, build_teacher_checkpoint, demo_config_path

ROLES = ('teacher', 'student')
MASK_DETECTORS = ['mask_rcnn_teacher', 'mask_rcnn_student']
DEMO_DETECTORS = [f'{family}_{role}' for family in DEMO_FAMILIES for role in ROLES] + ['retinanet_student_fpn32'] \
    + MASK_DETECTORS
COCO_DIR = osp.join(ROOT, 'configs', 'coco')
COCO_MODELS = sorted(p for p in glob.glob(osp.join(COCO_DIR, '*.py')) if osp.basename(p) != 'pairs.py')


@pytest.fixture(autouse=True, scope='module')
def mmdet_scope():
    # what mmengine's Runner does from `default_scope`: registries resolve mmdet's modules first
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)


def _build(name):
    return MODELS.build(Config.fromfile(demo_config_path(name)).model)


def _one_batch(name, shapes_root, batch_size=2):
    """A batch from the config's own train dataloader, pointed at the generated test data."""
    cfg = use_data_root(Config.fromfile(demo_config_path(name)), shapes_root)
    loader_cfg = cfg.train_dataloader
    loader_cfg.batch_size = batch_size
    return next(iter(Runner.build_dataloader(loader_cfg, seed=0)))


def _non_backbone_shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith('backbone.')}


# ------------------------------------------------------------------------------------------------ demo pairs
@pytest.mark.parametrize('family', DEMO_FAMILIES)
def test_student_is_smaller_with_the_teachers_fpn_and_head_shapes(family):
    teacher, student = _build(f'{family}_teacher'), _build(f'{family}_student')
    assert teacher.backbone.depth == student.backbone.depth == 18
    assert (teacher.backbone.base_channels, student.backbone.base_channels) == (64, 16)
    assert teacher.neck.out_channels == student.neck.out_channels == 64
    assert teacher.neck.num_outs == student.neck.num_outs == 5
    n_teacher = sum(p.numel() for p in teacher.backbone.parameters())
    n_student = sum(p.numel() for p in student.backbone.parameters())
    assert n_student * 10 < n_teacher
    t_shapes, s_shapes = _non_backbone_shapes(teacher), _non_backbone_shapes(student)
    assert set(t_shapes) == set(s_shapes)
    differ = sorted(k for k in t_shapes if t_shapes[k] != s_shapes[k])
    # only the FPN's lateral 1x1 convs read backbone widths; every other neck/head tensor can be inherited
    assert differ and all(k.startswith('neck.lateral_convs.') for k in differ)


@pytest.mark.parametrize('family', DEMO_FAMILIES)
def test_feature_strides_4_to_64(family):
    model = _build(f'{family}_student').eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 128, 128))
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert all(f.shape[1] == 64 for f in feats)


@pytest.mark.parametrize('name', DEMO_DETECTORS)
def test_one_training_step_and_predict(name, shapes_root):
    torch.manual_seed(0)
    model = _build(name)
    model.init_weights()
    assert sum(p.numel() for p in model.parameters()) > 0
    data = model.data_preprocessor(_one_batch(name, shapes_root), training=True)
    assert data['inputs'].shape == (2, 3, 128, 128)
    assert all(len(s.gt_instances) > 0 for s in data['data_samples'])
    model.train()
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    stem = model.backbone.conv1.weight.grad
    assert stem is not None and stem.abs().sum() > 0      # the loss reaches the from-scratch backbone

    model.eval()
    with torch.no_grad():
        results = model.predict(data['inputs'], data['data_samples'])
    assert len(results) == 2 and all(isinstance(r, DetDataSample) for r in results)
    for r in results:
        boxes = r.pred_instances.bboxes
        assert boxes.ndim == 2 and boxes.shape[1] == 4
        assert set(r.pred_instances.labels.tolist()) <= {0, 1, 2}
        if name in MASK_DETECTORS:   # one 128 x 128 mask per predicted box, beside it
            assert 'loss_mask' in losses
            assert tuple(r.pred_instances.masks.shape) == (len(boxes), 128, 128)


def test_schedules_and_single_final_checkpoint():
    for family in DEMO_FAMILIES:
        for role, iters in (('teacher', 1200), ('student', 600)):
            cfg = Config.fromfile(demo_config_path(f'{family}_{role}'))
            assert cfg.train_cfg.type == 'IterBasedTrainLoop'
            assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == iters
            (step,) = cfg.param_scheduler
            assert step.milestones == [iters * 3 // 4] and step.end == iters and not step.by_epoch
            assert cfg.default_hooks.checkpoint.save_last and cfg.default_hooks.checkpoint.interval == -1
            assert cfg.train_dataloader.batch_size == 8
            assert cfg.train_dataloader.dataset.metainfo.classes == ('rectangle', 'ellipse', 'triangle')
            init = cfg.model.backbone.init_cfg   # nothing can be downloaded: pretrained on the shapes data
            assert init.type == 'PretrainedBackbone'
            assert init.checkpoint.endswith('resnet18_w16.pth' if role == 'student' else 'resnet18_w64.pth')


def test_fpn32_student_needs_the_channel_adapter(tmp_path, shapes_root):
    student = _build('retinanet_student_fpn32').eval()
    assert student.neck.out_channels == 32
    with torch.no_grad():
        feats = student.extract_feat(torch.zeros(1, 3, 128, 128))
    assert {f.shape[1] for f in feats} == {32}
    from distill_core.distiller import DetectionDistiller
    distiller = DetectionDistiller(
        teacher=dict(config=demo_config_path('retinanet_teacher'),
                     checkpoint=build_teacher_checkpoint('retinanet', tmp_path)),
        student=dict(config=demo_config_path('retinanet_student_fpn32')))
    assert sorted(distiller.adapters) == [f'fpn{i}' for i in range(5)]
    assert (distiller.adapters['fpn0'].in_channels, distiller.adapters['fpn0'].out_channels) == (32, 64)


@pytest.mark.parametrize('family', DEMO_FAMILIES)
def test_distill_config_is_a_clean_distiller_over_the_student(family, tmp_path, monkeypatch):
    cfg = Config.fromfile(demo_config_path(f'distill_{family}_fi'))
    assert set(cfg.model) == {'type', 'teacher', 'student', 'inherit_neck_head', 'distill_losses'}
    assert cfg.model.type == 'DetectionDistiller' and cfg.model.inherit_neck_head
    assert cfg.model.teacher.checkpoint == f'work_dirs/demo/{family}_teacher/final.pth'
    assert cfg.train_cfg.max_iters == 600
    # paths in the config are relative to the repository root, where the CLI runs
    monkeypatch.chdir(ROOT)
    cfg.model.teacher.checkpoint = build_teacher_checkpoint(family, tmp_path)
    distiller = MODELS.build(cfg.model)
    distiller.init_weights()
    assert distiller.inherited_keys and not any(k.startswith('backbone.') for k in distiller.inherited_keys)
    assert sorted(distiller.distill_losses) == [f'fi_fpn{i}' for i in range(5)]


# ------------------------------------------------------------------------------------------------ COCO pairs
def _mmdet_base(path):
    """The ``mmdet::`` config a configs/coco file is based on."""
    tree = ast.parse(open(path).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == '_base_':
            return ast.literal_eval(node.value)
    raise AssertionError(f'{path} has no _base_')


def _zoo_weights(family_dir):
    """config path (configs/<family>/<name>.py) -> model-zoo checkpoint file name, from mmdet's metafile."""
    import mmdet
    with open(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', family_dir, 'metafile.yml')) as f:
        models = yaml.safe_load(f)['Models']
    return {m['Config']: unquote(osp.basename(m['Weights'])) for m in models if isinstance(m.get('Weights'), str)}


def test_coco_pairs_index_points_at_real_configs_and_zoo_checkpoints():
    pairs = Config.fromfile(osp.join(COCO_DIR, 'pairs.py')).pairs
    assert len(pairs) == 9   # DetKDS's seven pairs (RetinaNet twice) and PKD's FCOS and Swin -> RetinaNet
    for name, pair in pairs.items():
        for role in ROLES:
            assert osp.isfile(osp.join(ROOT, pair[role])), (name, role)
        base = _mmdet_base(osp.join(ROOT, pair.teacher))
        assert base.startswith('mmdet::')
        base = base[len('mmdet::'):]
        expected = _zoo_weights(base.split('/')[0])['configs/' + base]
        assert pair.teacher_checkpoint == 'checkpoints/' + expected, name
        assert pair.teacher_box_ap > pair.student_box_ap


@pytest.mark.parametrize('path', COCO_MODELS, ids=osp.basename)
def test_coco_configs_never_download_weights(path):
    pairs = Config.fromfile(osp.join(COCO_DIR, 'pairs.py')).pairs
    rel = osp.relpath(path, ROOT)
    teacher_of = [k for k, p in pairs.items() if p.teacher == rel]
    student_of = [k for k, p in pairs.items() if p.student == rel]
    assert bool(teacher_of) != bool(student_of), 'every COCO config is a teacher or a student of a listed pair'
    cfg = Config.fromfile(path)
    init = cfg.model.backbone.init_cfg
    if teacher_of:      # weights come from the model-zoo checkpoint
        assert init is None
    else:               # ImageNet weights from the local file the pair index lists
        assert init.type == 'Pretrained'
        assert {pairs[k].student_pretrained for k in student_of} == {init.checkpoint}
    assert cfg.model.get('init_cfg') is None


@pytest.mark.slow
def test_every_coco_model_builds():
    for path in COCO_MODELS:
        model = MODELS.build(Config.fromfile(path).model)
        assert model.neck.out_channels == 256
        assert sum(p.numel() for p in model.parameters()) > 20_000_000
        del model


# ------------------------------------------------------------------------------------------------ Mask R-CNN pair
def test_mask_rcnn_pair_shares_the_faster_rcnn_detector_and_loads_masks():
    faster, teacher, student = (Config.fromfile(demo_config_path(n))
                                for n in ('faster_rcnn_teacher', 'mask_rcnn_teacher', 'mask_rcnn_student'))
    assert teacher.model.backbone == faster.model.backbone and teacher.model.neck == faster.model.neck
    assert student.model.backbone.init_cfg.checkpoint.endswith('resnet18_w16.pth')
    assert teacher.model.roi_head.mask_head.num_classes == 3
    for cfg, iters in ((teacher, 1200), (student, 600)):
        assert cfg.train_cfg.max_iters == iters and cfg.param_scheduler[0].milestones == [iters * 3 // 4]
        for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
            (load,) = [t for t in loader.dataset.pipeline if t.type == 'LoadAnnotations']
            assert load.with_mask
        assert cfg.val_evaluator.metric == cfg.test_evaluator.metric == ['bbox', 'segm']
    t_shapes, s_shapes = (_non_backbone_shapes(_build(name)) for name in MASK_DETECTORS)
    assert set(t_shapes) == set(s_shapes)
    assert all(k.startswith('neck.lateral_convs.') for k in t_shapes if t_shapes[k] != s_shapes[k])


def test_test_command_reports_mask_ap_beside_box_ap(tmp_path, shapes_root):
    from workers.full_training import test
    checkpoint = build_teacher_checkpoint('mask_rcnn', tmp_path)
    metrics = test(demo_config_path('mask_rcnn_teacher'), checkpoint, work_dir=str(tmp_path / 'test'),
                   cfg_options=_data_root_options('mask_rcnn_teacher', shapes_root))
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0


def test_mask_config_on_box_only_data_is_a_one_line_error(tmp_path, shapes_root):
    import shutil
    from distill_core.errors import DataError
    from workers.full_training import test
    root = tmp_path / 'box_only'
    shutil.copytree(shapes_root, root)
    for split in ('train', 'val'):
        path = root / 'annotations' / f'{split}.json'
        coco = json.loads(path.read_text())
        for ann in coco['annotations']:
            ann.pop('segmentation')
        path.write_text(json.dumps(coco))
    with pytest.raises(DataError, match='no instance mask .*detkds-search data shapes'):
        test(demo_config_path('mask_rcnn_teacher'), build_teacher_checkpoint('mask_rcnn', tmp_path),
             cfg_options=_data_root_options('mask_rcnn_teacher', str(root)))


def _data_root_options(name, data_root):
    cfg = use_data_root(Config.fromfile(demo_config_path(name)), data_root)
    return {key: cfg[key].to_dict() for key in ('test_dataloader', 'test_evaluator')}
