"""Mixed precision of the proxy (``proxy.amp``), run on CPU where torch allows bfloat16 autocast, so that a GPU
run is not its first run: the backbones and necks run in bfloat16, the heads, mmcv's ops and every loss at full
precision, with values and gradients close to a float32 step; the proxy's loop and its teacher cache under it."""
import random

import pytest
import torch

from distill_core.genome import Genome
from search.config import load_search_config
from search.space import Space
from workers import proxy as proxy_module
from workers.proxy import build_distiller, run_proxy_trial
from workers.settings import check_search_config

from .demo_utils import DEMO_FAMILIES, ROOT, build_teacher_checkpoint, demo_batch, tiny_proxy

torch.set_num_threads(2)


def every_input_genome(space: Space, family: str) -> Genome:
    """One term per input the family offers: a published method's where there is one (MGD's generator, FGD's
    focal imitation: trainable ops), else the DetKDS release's, else a seeded sample."""
    rng = random.Random(0)
    terms = []
    for name in space.offered_inputs(family):
        known = space.method_terms(name) + space.published_terms(name)
        terms.append(known[0] if known else space.sample_term(name, rng, 1, family))
    return Genome(tuple(terms))


def distiller_step(model, inputs, samples):
    """Loss values and the student's gradients of one training step, every random draw seeded the same."""
    torch.manual_seed(0)
    random.seed(0)
    model.zero_grad(set_to_none=True)
    losses = model.loss(inputs, [s.clone() for s in samples])
    total, log_vars = model.parse_losses(losses)
    total.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.student.named_parameters() if p.grad is not None}
    return losses, total.detach(), grads


@pytest.mark.parametrize('family', DEMO_FAMILIES + ('mask_rcnn',))
def test_bfloat16_features_with_full_precision_heads_and_losses(family, tmp_path_factory, shapes_root):
    checkpoint = build_teacher_checkpoint(family, tmp_path_factory.mktemp(f'{family}_teacher'))
    raw = tiny_proxy(load_search_config(f'{ROOT}/configs/search/demo_{family}.py').raw, shapes_root, checkpoint)
    settings = check_search_config(raw)
    space = Space.default()
    genome = every_input_genome(space, family)
    assert {t.input for t in genome.terms} == set(space.offered_inputs(family))
    torch.manual_seed(0)
    model = build_distiller(raw, genome, settings, ROOT)
    model.train()
    inputs, samples = demo_batch(model, family, shapes_root, batch_size=2)
    ref_losses, ref_total, ref_grads = distiller_step(model, inputs, samples)

    neck_dtypes = []
    hooks = [detector.neck.register_forward_hook(lambda m, i, out: neck_dtypes.extend(o.dtype for o in out))
             for detector in (model.student, model.teacher)]
    model.set_feature_autocast('cpu')
    assert model.feature_precision == 'bfloat16'
    losses, total, grads = distiller_step(model, inputs, samples)
    for hook in hooks:
        hook.remove()

    assert neck_dtypes and set(neck_dtypes) == {torch.bfloat16}   # both necks (and backbones) ran in bfloat16
    assert set(losses) == set(ref_losses)
    for key, value in losses.items():   # the heads and the losses ran at full precision
        for tensor in (value if isinstance(value, (list, tuple)) else [value]):
            assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all(), key
    assert torch.isfinite(total) and abs(float(total) - float(ref_total)) <= 0.05 * abs(float(ref_total)) + 1e-3
    assert set(grads) == set(ref_grads)
    backbone = [name for name in grads if name.startswith('backbone.')]
    assert backbone and grads[backbone[0]].abs().sum() > 0   # gradients reach the backbone
    flat = torch.cat([grads[name].flatten() for name in sorted(grads)])
    ref_flat = torch.cat([ref_grads[name].flatten() for name in sorted(ref_grads)])
    assert torch.isfinite(flat).all()
    assert torch.nn.functional.cosine_similarity(flat, ref_flat, dim=0) > 0.95


def test_whole_step_autocast_would_break_mmcv_ops(tmp_path_factory, shapes_root):
    """Why only the features: under a whole-step bfloat16 autocast the Faster R-CNN step reaches mmcv's compiled
    ops with bfloat16 tensors (first the RPN proposals' nms: "expected scalar type Float but found BFloat16"),
    which they do not implement, on CUDA neither (nor RetinaNet's sigmoid_focal_loss, RoIAlign there)."""
    checkpoint = build_teacher_checkpoint('faster_rcnn', tmp_path_factory.mktemp('frcnn_teacher'))
    raw = tiny_proxy(load_search_config(f'{ROOT}/configs/search/demo_faster_rcnn.py').raw, shapes_root, checkpoint)
    model = build_distiller(raw, None, check_search_config(raw), ROOT)
    model.train()
    inputs, samples = demo_batch(model, 'faster_rcnn', shapes_root, batch_size=2)
    with pytest.raises(RuntimeError, match='BFloat16'):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            model.loss(inputs, samples)


def test_proxy_trains_and_caches_the_teacher_under_feature_autocast(tmp_path_factory, shapes_root, monkeypatch):
    """The proxy's own loop with the GPU's precision rule taken on CPU: the teacher cache built from the
    bfloat16 teacher (its key: tests/test_teacher_cache.py), the candidate trained and evaluated, repeatably."""
    checkpoint = build_teacher_checkpoint('faster_rcnn', tmp_path_factory.mktemp('frcnn_teacher_loop'))
    raw = tiny_proxy(load_search_config(f'{ROOT}/configs/search/demo_faster_rcnn.py').raw, shapes_root, checkpoint,
                     teacher_cache=True, iterations=3)
    genome = every_input_genome(Space.default(), 'faster_rcnn').to_json()
    built = []
    monkeypatch.setattr(proxy_module, 'feature_autocast_device', lambda settings, device: 'cpu')
    original_build = proxy_module.build_distiller

    def recording_build(*args, **kwargs):
        model = original_build(*args, **kwargs)
        built.append(model)
        return model
    monkeypatch.setattr(proxy_module, 'build_distiller', recording_build)
    first = run_proxy_trial(raw, genome, seed=0, base_dir=ROOT)
    second = run_proxy_trial(raw, genome, seed=0, base_dir=ROOT)
    assert first.failure is None and second.failure is None
    assert built and all(model.feature_precision == 'bfloat16' for model in built)
    assert first.metrics == second.metrics and first.iterations == 3
    assert 0.0 <= first.metrics['AP'] <= 1.0
