"""The ``mask`` knowledge input (the RoI mask head's response, Mask R-CNN): offered only to mask-head families
(the others drop it with the reason), and its searched loss on the demo Mask R-CNN pair: the teacher's mask head
on the student's own positive RoIs, a finite loss whose gradient reaches the student only."""
import random

import pytest
import torch

import distill_core
from distill_core.errors import ConfigError
from distill_core.genome import Genome, OpSpec, Term
from search.operators import Stage1Ops, build_ops
from search.space import Space

from .demo_utils import DEMO_FAMILIES, build_teacher_checkpoint, demo_batch, demo_config_path

distill_core.register_all_modules()
torch.set_num_threads(2)


def mask_term(transform='no', distance='l2', weight=1.0):
    return Term('mask', True, (OpSpec(transform),), OpSpec(distance), weight)


def test_only_mask_head_families_are_offered_it():
    space = Space.default()
    assert 'mask' in space.offered_inputs('mask_rcnn')
    assert {'global', 'fg_bg', 'instance', 'logits', 'localization'} <= set(space.offered_inputs('mask_rcnn'))
    assert 'mask' in build_ops(space, None, 'mask_rcnn')[0]
    for family in DEMO_FAMILIES:   # none of them has a RoI mask head
        assert 'mask' not in space.offered_inputs(family)
        assert 'mask' not in build_ops(space, None, family)[0]
        assert 'mask' not in {t.input for t in space.sample_genome(random.Random(0), family=family).terms}
    assert space.input_problem('mask', 'faster_rcnn') == \
        "input 'mask' is not offered for faster_rcnn: it has no RoI mask head"
    with pytest.raises(ConfigError, match='not offered for retinanet: it has no RoI mask head'):
        Stage1Ops(space, 'mask', family='retinanet')
    with pytest.raises(ConfigError, match='no RoI mask head'):
        space.validate(Genome((mask_term(),)), 'faster_rcnn')
    space.validate(Genome((mask_term('softmax_HW', 'kl'),)), 'mask_rcnn')


def test_search_config_family_of_a_mask_rcnn_student():
    from search.config import FAMILY_OF_TYPE
    assert FAMILY_OF_TYPE['MaskRCNN'] == 'mask_rcnn'


@pytest.fixture(scope='module')
def teacher_checkpoint(tmp_path_factory):
    return build_teacher_checkpoint('mask_rcnn', tmp_path_factory.mktemp('mask_teacher'))


def test_mask_term_trains_the_student_only_on_the_teachers_masks_of_its_rois(teacher_checkpoint, shapes_root):
    from distill_core.distiller import DetectionDistiller
    from distill_core.families import family_of
    model = DetectionDistiller(
        teacher=dict(config=demo_config_path('mask_rcnn_teacher'), checkpoint=teacher_checkpoint),
        student=dict(config=demo_config_path('mask_rcnn_student')),
        distill_losses=[dict(name='searched', loss=dict(type='SearchedDistillLoss',
                                                        genome=Genome((mask_term(),)).to_json()))])
    model.init_weights()
    model.train()
    assert family_of(model.student).name == 'mask_rcnn' and family_of(model.teacher).name == 'mask_rcnn'
    captured = []
    model.distill_losses['searched'].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    for step in range(3):
        inputs, samples = demo_batch(model, 'mask_rcnn', shapes_root)
        losses = model.loss(inputs, samples)
        distill = losses['loss_searched_mask']
        assert torch.isfinite(distill) and distill > 0 and 'loss_mask' in losses
        optimizer.zero_grad()
        distill.backward()
        assert all(p.grad is None for p in model.teacher.parameters())
        assert model.student.roi_head.mask_head.conv_logits.weight.grad.abs().sum() > 0
        assert model.student.backbone.conv1.weight.grad.abs().sum() > 0
        optimizer.step()
    assert all(torch.equal(v, model.teacher.state_dict()[k]) for k, v in teacher_before.items())

    # the teacher's part is its own mask branch run by hand on the student's positive RoIs
    ctx = captured[-1]
    rois = ctx.recorded['searched.mask_roi_extractor'][0][0][1]
    student_preds = ctx.recorded['searched.mask_head'][0][1]
    assert student_preds.shape == (len(rois), 3, 28, 28)
    with torch.no_grad():
        expected = model.teacher.roi_head._mask_forward(ctx.teacher_feats, rois)['mask_preds']
    (part,) = model.distill_losses['searched'].terms['mask'].knowledge.parts(ctx, family_of(model.student), 'l2')
    ((student, teacher),) = part.pairs
    torch.testing.assert_close(teacher, expected.sigmoid())
    torch.testing.assert_close(student, student_preds.sigmoid())


def test_a_student_without_a_mask_head_refuses_the_mask_term(tmp_path):
    from distill_core.distiller import DetectionDistiller
    with pytest.raises(ConfigError, match="'mask' is not defined for faster_rcnn: it has no RoI mask head"):
        DetectionDistiller(
            teacher=dict(config=demo_config_path('faster_rcnn_teacher'),
                         checkpoint=build_teacher_checkpoint('faster_rcnn', tmp_path)),
            student=dict(config=demo_config_path('faster_rcnn_student')),
            distill_losses=[dict(name='searched', loss=dict(type='SearchedDistillLoss',
                                                            genome=Genome((mask_term(),)).to_json()))])


def test_a_teacher_without_a_mask_head_is_a_clear_error(tmp_path):
    """Refused when the distiller is built (the pair cannot serve the input), before any step."""
    from distill_core.distiller import DetectionDistiller
    with pytest.raises(ConfigError, match="genome term 'mask' is not defined for the pair faster_rcnn -> mask_rcnn: "
                                          'the faster_rcnn teacher: it has no RoI mask head'):
        DetectionDistiller(
            teacher=dict(config=demo_config_path('faster_rcnn_teacher'),
                         checkpoint=build_teacher_checkpoint('faster_rcnn', tmp_path)),
            student=dict(config=demo_config_path('mask_rcnn_student')),
            distill_losses=[dict(name='searched', loss=dict(type='SearchedDistillLoss',
                                                            genome=Genome((mask_term(),)).to_json()))])
