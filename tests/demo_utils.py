"""Shared helpers for tests on the demo pairs (tiny detectors on the generated shapes data)."""
import os.path as osp

import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_FAMILIES = ('retinanet', 'faster_rcnn', 'fcos', 'gfl', 'reppoints')


def demo_config_path(name: str) -> str:
    return osp.join(ROOT, 'configs', 'demo', f'{name}.py')


def build_teacher_checkpoint(family: str, tmp_path, config: str = None) -> str:
    """A randomly initialised detector saved as a checkpoint: enough to test wiring, not accuracy."""
    from distill_core.checkpoint import save_atomic
    from distill_core.model_config import build_in_mmdet_scope
    name = config or f'{family}_teacher'
    path = osp.join(str(tmp_path), f'{name}.pth')
    if not osp.exists(path):
        torch.manual_seed(0)
        model = build_in_mmdet_scope(Config.fromfile(demo_config_path(name)).model)
        model.init_weights()
        save_atomic({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def demo_batch(model, family: str, shapes_root: str, batch_size: int = 2, split: str = 'train'):
    """One preprocessed batch from the demo config's own dataloader on the generated data."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from workers.full_training import use_data_root
    cfg = Config.fromfile(demo_config_path(f'{family}_student'))
    use_data_root(cfg, shapes_root)
    loader_cfg = cfg[f'{split}_dataloader']
    loader_cfg.batch_size = batch_size
    loader_cfg.num_workers = 0
    loader_cfg.persistent_workers = False
    with DefaultScope.overwrite_default_scope('mmdet'):
        loader = Runner.build_dataloader(loader_cfg, seed=0)
        data = next(iter(loader))
    data = model.data_preprocessor(data, training=(split == 'train'))
    return data['inputs'], data['data_samples']


def tiny_proxy(search_raw, shapes_root: str, teacher_checkpoint: str, **proxy):
    """A demo search config's raw sections on the test data: the given (random) teacher checkpoint and a
    2-iteration proxy on 8 + 4 images, the teacher cache off; ``proxy`` overrides more proxy keys."""
    import copy
    raw = copy.deepcopy(dict(search_raw))
    raw['teacher']['checkpoint'] = teacher_checkpoint
    raw['data'] = dict(data_root=shapes_root)
    raw['proxy'].update(dict(train_images=8, val_images=4, iterations=2, batch_size=2, report_interval=1,
                             eval_interval=None, teacher_cache=False), **proxy)
    return raw
