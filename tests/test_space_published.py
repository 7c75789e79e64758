"""The published methods as genomes of the search space: the space's PKD, MGD and FGD genomes compute the
methods' own losses (distill_core/methods: same value and gradient on the same inputs, MGD with the same random
mask), generation 0 of each stage-1 input holds them, stage 2 seeds their combinations and strategies, and a
genome is named when it equals a published one."""
import random

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from distill_core.context import DistillContext
from distill_core.errors import ConfigError
from distill_core.genome import Genome, TrainingStrategy
from distill_core.methods.fgd import FGDLoss, attention_loss
from distill_core.methods.mgd import MGDLoss
from distill_core.methods.pkd import PKDLoss
from distill_core.searched_loss import SearchedTerm
from search.evolution import Evolution, StagePlan
from search.operators import Stage1Ops, Stage2Ops, build_ops
from search.space import Space

C = 8
SIZES = ((12, 12), (6, 6), (3, 3))   # three FPN levels


@pytest.fixture(scope='module')
def space():
    return Space.default()


def levels(seed, n=2):
    """Student (requires grad) and teacher features of every level."""
    gen = torch.Generator().manual_seed(seed)
    students = [torch.randn(n, C, h, w, generator=gen, dtype=torch.float64).requires_grad_() for h, w in SIZES]
    teachers = [torch.randn(n, C, h, w, generator=gen, dtype=torch.float64) for h, w in SIZES]
    return students, teachers


def searched_term(term):
    """The genome term as the distiller builds it (trainable parts sized), in double precision."""
    loss = SearchedTerm(term)
    loss.bind_features(C, len(SIZES))
    return loss.double()


def searched(term, students, teachers):
    """The genome term's value on these levels (its knowledge input's part: the sum over levels) x its weight."""
    return term.weight * searched_term(term).part_value(list(zip(students, teachers)))


def assert_same(a, b, students):
    ga = torch.autograd.grad(a, students, retain_graph=True)
    gb = torch.autograd.grad(b, students, retain_graph=True)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), (float(a), float(b))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-8, atol=1e-12)


def test_pkd_genome_is_pkd_loss(space):
    """l2 after PKD's standardisation, at half PKD's loss_weight (the demo config's 2), summed over levels."""
    term = space.methods['pkd'].terms[0]
    students, teachers = levels(0)
    value = searched(term, students, teachers)
    reference = PKDLoss(loss_weight=2.0)(students, teachers)
    assert_same(value, reference, students)


def test_mgd_genome_is_mgd_loss_with_the_same_mask(space):
    """The generative op masks the student as MGD does (same draws from the same seed), regenerates it with a
    per-level generator, and sse x alpha is MGD's ``alpha * sum((G - T)^2) / N``; generator gradients too."""
    term = space.methods['mgd'].terms[0]
    assert term.transforms[0].kwargs == {'ratio': 0.65}
    students, teachers = levels(1)
    torch.manual_seed(0)
    methods = [MGDLoss(C, C, alpha_mgd=term.weight, lambda_mgd=0.65).double() for _ in SIZES]
    loss = searched_term(term)
    generative = loss.cascade[0]
    for level, method in enumerate(methods):   # same generator weights per level
        generative.levels[level].load_state_dict(method.generation.state_dict())
    torch.manual_seed(7)
    value = term.weight * loss.part_value(list(zip(students, teachers)))
    torch.manual_seed(7)
    reference = sum(method(s, t) for method, s, t in zip(methods, students, teachers))
    assert_same(value, reference, students)
    mine = torch.autograd.grad(value, list(generative.parameters()))
    theirs = torch.autograd.grad(reference, [p for m in methods for p in m.generation.parameters()])
    for x, y in zip(mine, theirs):
        assert torch.allclose(x, y, rtol=1e-8, atol=1e-12)
    torch.manual_seed(8)   # another draw masks other positions: the op is random, like MGD
    assert not torch.allclose(term.weight * loss.part_value(list(zip(students, teachers))), value)


def fg_bg_context(students, teachers, boxes, img_hw=(96, 96)):
    samples = []
    for image_boxes in boxes:
        sample = DetDataSample(metainfo={'img_shape': img_hw})
        sample.gt_instances = InstanceData(bboxes=torch.tensor(image_boxes, dtype=torch.float32),
                                           labels=torch.zeros(len(image_boxes), dtype=torch.long))
        samples.append(sample)
    return DistillContext(inputs=torch.zeros(len(boxes), 3, *img_hw), data_samples=samples, student=None,
                          teacher=None, student_feats=tuple(students), raw_student_feats=tuple(students),
                          teacher_feats=tuple(teachers), teacher_inputs=torch.zeros(len(boxes), 3, *img_hw))


def test_fgd_focal_genome_is_fgd_fg_and_bg_terms(space):
    """On the fg_bg input (GT masks built by the input itself), teacher_att + sse x alpha is FGD's
    ``alpha * L_fg + beta * L_bg`` with beta = alpha / 2 (the input's bg factor), level by level."""
    term = space.methods['fgd_focal'].terms[0]
    students, teachers = levels(2)
    boxes = [[[8.0, 10.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0]], [[30.0, 30.0, 70.0, 80.0]]]
    loss = SearchedTerm(term).double()
    ctx = fg_bg_context(students, teachers, boxes)
    values = loss(ctx, None)
    assert set(values) == {'loss_fg', 'loss_bg'}
    fgd = FGDLoss(C, C, temp=0.5, alpha_fgd=term.weight, beta_fgd=term.weight / 2, split_terms=True).double()
    samples = ctx.data_samples
    reference = [fgd(s, t, samples) for s, t in zip(students, teachers)]
    assert_same(values['loss_fg'], sum(r['loss_fg'] for r in reference), students)
    assert_same(values['loss_bg'], sum(r['loss_bg'] for r in reference), students)


def test_fgd_attention_and_relation_terms_are_ops(space):
    """attention_maps + sae is FGD's attention term; context + sse its global relation, the context blocks of
    both sides trained (their gradients equal FGD's)."""
    students, teachers = levels(3)
    attention = Genome.from_dict({'terms': {'global': dict(transforms=['attention_maps', 'no', 'no'],
                                                           distance='sae', weight=1)}}).terms[0]
    value = searched(attention, students, teachers)
    reference = sum(attention_loss(s, t.detach(), 0.5) for s, t in zip(students, teachers))
    assert_same(value, reference, students)

    relation = Genome.from_dict({'terms': {'global': dict(transforms=['context', 'no', 'no'], distance='sse',
                                                          weight=1)}}).terms[0]
    torch.manual_seed(0)
    fgds = [FGDLoss(C, C, lambda_fgd=1.0, split_terms=True).double() for _ in SIZES]
    loss = searched_term(relation)
    context = loss.cascade[0]
    for level, fgd in enumerate(fgds):
        for block in (fgd.context_s, fgd.context_t):   # leave the zero start, so the test sees the blocks
            torch.nn.init.normal_(block.channel_add[-1].weight, std=0.1)
        context.levels[level]['student'].load_state_dict(fgd.context_s.state_dict())
        context.levels[level]['teacher'].load_state_dict(fgd.context_t.state_dict())
    value = loss.part_value(list(zip(students, teachers)))
    reference = sum(fgd(s, t, masks=(torch.ones(2, 1, *s.shape[2:]),) * 2)['loss_rela']
                    for fgd, s, t in zip(fgds, students, teachers))
    assert_same(value, reference, students)
    teacher_blocks = [p for level in context.levels for p in level['teacher'].parameters()]
    mine = torch.autograd.grad(value, teacher_blocks)
    theirs = torch.autograd.grad(reference, [p for f in fgds for p in f.context_t.parameters()])
    assert any(g.abs().sum() > 0 for g in mine)
    for x, y in zip(mine, theirs):
        assert torch.allclose(x, y, rtol=1e-8, atol=1e-12)


def test_trainable_ops_need_the_distiller_to_size_them(space):
    term = space.methods['mgd'].terms[0]
    students, teachers = levels(4)
    with pytest.raises(ConfigError, match='build its loss inside DetectionDistiller'):
        SearchedTerm(term).double().part_value(list(zip(students, teachers)))


# --------------------------------------------------------------------------------- in the search
PUBLISHED_INPUTS = {'pkd': 'global', 'mgd': 'global', 'fgd_focal': 'fg_bg'}


@pytest.mark.parametrize('family', ['retinanet', 'faster_rcnn'])
def test_generation_zero_holds_every_published_genome(space, family):
    """Every published method's formulation (exact weight) and the DetKDS release's, even beyond the population
    size, all protected from early stopping; then random genomes up to the population size."""
    stage1, stage2 = build_ops(space, ['global', 'fg_bg'], family)
    plan = StagePlan(stage1_inputs=('global', 'fg_bg'), population_size=2, generations=2, stage2_population_size=2,
                     elite_count=1, tournament_size=2)
    first = Evolution(plan, stage1, stage2).ask(100)
    for name, input in PUBLISHED_INPUTS.items():
        key = Genome(space.methods[name].terms).key()
        assert [p for p in first if p.key == key and p.input == input and p.protected], name
    for input in ('global', 'fg_bg'):
        seeds = [stage1[input].key(g) for g in stage1[input].seeds()]
        proposed = [p.key for p in first if p.input == input]
        assert len(seeds) > plan.population_size and proposed == seeds
        assert len(seeds) > len(space.method_terms(input)) and space.published_terms(input)


def test_published_weights_keep_their_own_scale(space):
    """MGD's weight is the unit of the global input's sse weights (a per-sample sum, ~1000x a mean): mutations and
    crossovers keep sse terms on that scale and move a term that changes distance to the plain grid (and back),
    at the same position in the grid."""
    ops = Stage1Ops(space, 'global')
    mgd = Genome(space.methods['mgd'].terms)
    assert ops.problem(mgd) is None
    sse = ops.weight_grid('sse')
    assert sse == tuple(w * 0.0013 for w in (1, 2, 5, 10)) and ops.weight_grid('l1') == (1, 2, 5, 10)
    assert Stage1Ops(space, 'fg_bg').weight_grid('sse') == tuple(w * 0.004 for w in (1, 2, 5, 10))
    rng = random.Random(0)
    population = [mgd, Genome(space.methods['pkd'].terms)] + [ops.sample(rng) for _ in range(10)]
    moved = 0
    for _ in range(300):
        child = ops.mutate(ops.crossover(rng.choice(population), rng.choice(population), rng), rng)
        assert ops.problem(child) is None, ops.problem(child)
        term = child.terms[0]
        assert term.weight in (sse if term.distance.name == 'sse' else (1, 2, 5, 10))
        moved += term.distance.name == 'sse'
        population.append(child)
    assert moved


def test_stage2_seeds_hold_each_published_combination_and_strategy(space):
    winners = {'global': Genome(space.methods['pkd'].terms), 'fg_bg': Genome(space.methods['fgd_focal'].terms)}
    proxy = TrainingStrategy(inherit_neck_head=True)
    ops = Stage2Ops(space, winners, default_strategy=proxy)
    seeds = ops.seeds()
    combos = {(tuple(t.weight for t in g.terms), g.strategy or proxy) for g in seeds}
    assert seeds[0].strategy is None          # the proxy's recipe is no strategy: the key of stage-1's genome
    assert ((1.0, 0.004), proxy) in combos                                        # stage-1 weights, proxy recipe
    assert ((1.0, 0.0), space.methods['pkd'].strategy) in combos                  # PKD: global only, no inherit
    assert ((0.0, 0.004), space.methods['fgd_focal'].strategy) in combos          # FGD: fg/bg only, inherit
    for genome in seeds:
        assert ops.problem(genome) is None
    assert space.methods['pkd'].strategy == TrainingStrategy(False)
    rng = random.Random(0)
    population = list(seeds)
    seen = set()
    for _ in range(100):
        child = ops.mutate(ops.crossover(rng.choice(population), rng.choice(population), rng), rng)
        assert ops.problem(child) is None, ops.problem(child)
        seen.add(child.strategy or proxy)
        population.append(child)
    assert {s.inherit_neck_head for s in seen} == {True, False}
    assert {s.warmup for s in seen} == {0.0, 0.1} and {s.decay for s in seen} == {'none', 'linear'}


def test_published_name_says_which_published_genome_a_genome_is(space):
    for name, genome in space.methods.items():
        assert space.published_name(genome) == name
        assert space.published_name(Genome(genome.terms)) == name          # no strategy: the loss decides
        other = TrainingStrategy(not genome.strategy.inherit_neck_head)
        assert space.published_name(Genome(genome.terms, other)) is None   # same loss, another recipe
    pkd_loss = Genome(space.methods['pkd'].terms)
    assert space.published_name(pkd_loss, default_strategy=TrainingStrategy(True)) is None
    assert space.published_name(space.published['retinanet_r101_r50']) == 'detkds/retinanet_r101_r50'
    new = Stage1Ops(space, 'global').sample(random.Random(3))
    assert space.published_name(new) is None


def test_a_reweighted_published_loss_is_named_a_variant_not_a_new_formulation(space):
    from search.results import describe_answer
    pkd = space.methods['pkd']
    heavier = Genome(tuple(t.replace(weight=t.weight * 10) for t in pkd.terms), TrainingStrategy(True))
    assert space.published_name(heavier) is None and space.variant_of(heavier) == 'pkd'
    assert space.variant_of(space.published['faster_rcnn_r101_r50']) == 'detkds/faster_rcnn_r101_r50'
    other_distance = Genome((pkd.terms[0].replace(distance=space.published['retinanet_r101_r50'].terms[0].distance),))
    assert space.variant_of(other_distance) is None
    answer = dict(kind='genome', label=heavier.terms[0].formula(), published=False, published_name=None,
                  variant_of='pkd', value=0.2, std=0.01, seeds=3, bar=None)
    assert describe_answer(answer).startswith('the published method pkd with other weights or training strategy: ')
