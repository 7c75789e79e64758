"""Evolution operators over the real genome and ``search_space.yaml`` (search/operators.py)."""
import random

import pytest

from distill_core.genome import Genome
from distill_core.transforms import IDENTITY_OPS
from search.evolution import EXPLORE, Evolution, Result, StagePlan
from search.operators import Stage1Ops, Stage2Ops, build_ops, nearest_option, scaled_grid, weight_unit
from search.space import Space

DRAWS = 150


@pytest.fixture(scope='module')
def space():
    return Space.default()


def op_names(genome):
    return tuple(op.name for op in genome.terms[0].transforms)


def test_nearest_option_is_logarithmic():
    assert nearest_option(6, (1, 2, 5, 10)) == 5
    assert nearest_option(50, (1, 2, 5, 10)) == 10
    assert nearest_option(0.3, (0.1, 1, 2)) == 0.1      # 0.3 / 0.1 = 3 < 1 / 0.3 = 3.33
    assert nearest_option(0, (0, 1, 2)) == 0 and nearest_option(0, (1, 2)) == 1


@pytest.mark.parametrize('input,family', [('global', None), ('fg_bg', None), ('instance', None),
                                          ('logits', None), ('localization', None), ('localization', 'gfl')])
def test_stage1_offspring_stay_in_the_space(space, input, family):
    ops = Stage1Ops(space, input, family)
    rng = random.Random(0)
    population = [ops.sample(rng) for _ in range(20)]
    changed = 0
    for i in range(DRAWS):
        a, b = rng.choice(population), rng.choice(population)
        child = ops.crossover(a, b, rng)
        mutant = ops.mutate(child, rng)
        for genome in (child, mutant):
            assert ops.problem(genome) is None, (genome.formula(), ops.problem(genome))
            assert space.term_problem(genome.terms[0], family) is None
            term = genome.terms[0]
            # the stage-1 grid; for a distance of a published method off the grid (sse), scaled by its weight
            assert term.weight in ops.weight_grid(term.distance.name)
            assert ops.weight_grid(term.distance.name) == space.weight_options(input, 1) or term.distance.name == 'sse'
            names = {op.name for op in term.transforms}
            assert not (term.distance.name == 'kl' and any(n.startswith('logsoftmax') for n in names))
            assert not (term.distance.name == 'ssim' and names & {'batch', 'channel'})
            if input == 'localization':
                assert term.transforms == ()
                assert family == 'gfl' or term.distance.name != 'kl'    # kl on boxes: GFL distributions only
        changed += ops.key(mutant) != ops.key(child)
        # a crossover child takes each slot from one of its parents (its distance may be repaired)
        for k, op in enumerate(child.terms[0].transforms):
            assert op in (a.terms[0].transforms[k], b.terms[0].transforms[k])
        population[i % len(population)] = mutant
    assert changed >= 0.9 * DRAWS


def test_stage1_seeds_are_the_published_formulations(space):
    """The published methods' at their exact weights (tests/test_space_published.py), then each DetKDS release
    formulation once, at the first pair's weight moved to the stage-1 grid."""
    global_seeds = Stage1Ops(space, 'global').seeds()
    methods = [Genome(space.methods[name].terms).key() for name in ('pkd', 'mgd')]
    assert [g.key() for g in global_seeds[:2]] == methods
    detkds = global_seeds[2:]
    assert len(detkds) == 1 and op_names(detkds[0]) == ('catt', 'scale_r2', 'norm_N')
    assert detkds[0].terms[0].distance.name == 'l1'
    assert detkds[0].terms[0].weight == 5.0            # published 6 (RetinaNet) -> nearest option of {1, 2, 5, 10}
    logits = Stage1Ops(space, 'logits').seeds()
    assert [(op_names(g), g.terms[0].distance.name, g.terms[0].weight) for g in logits] == \
        [(('softmax_C',), 'pearson', 0.1)]
    instance = Stage1Ops(space, 'instance').seeds()
    assert {op_names(g) for g in instance} == {('catt', 'scale_r1', 'norm_C'), ('mask', 'scale_r1', 'norm_C')}
    assert Stage1Ops(space, 'localization').seeds() == []


def test_generation_zero_starts_from_the_published_seeds(space):
    stage1, stage2 = build_ops(space, ['global', 'logits'])
    plan = StagePlan(stage1_inputs=('global', 'logits'), population_size=6, generations=2)
    first = Evolution(plan, stage1, stage2).ask(12)
    for name in ('global', 'logits'):
        proposed = [p.key for p in first if p.input == name]
        seeds = [stage1[name].key(g) for g in stage1[name].seeds()]
        assert seeds and proposed[:len(seeds)] == seeds and len(proposed) == 6


def test_stage2_varies_only_the_weights_of_the_winners(space):
    rng = random.Random(1)
    winners = {name: Stage1Ops(space, name).sample(rng) for name in ('global', 'fg_bg', 'logits')}
    ops = Stage2Ops(space, winners)

    def unit(name):   # 1, or the scale of a published method's distance (sse) the winner was drawn with
        return weight_unit(winners[name].terms[0].weight, space.weight_options(name, 1))
    assert ops.options['global'] == (0.0,) + scaled_grid((1.0, 2.0, 5.0, 10.0), unit('global'))   # off added
    assert ops.options['fg_bg'] == scaled_grid((0.0, 1.0, 2.0, 5.0), unit('fg_bg'))
    seeds = ops.seeds()
    stage1_weights = [nearest_option(w.terms[0].weight, ops.options[n]) for n, w in winners.items()]
    assert [t.weight for t in seeds[0].terms] == stage1_weights
    assert [t.weight for t in seeds[1].terms] == [unit(name) for name in winners]   # all at 1 (in their units)
    population = [ops.sample(rng) for _ in range(10)] + seeds
    off = 0
    for _ in range(DRAWS):
        child = ops.mutate(ops.crossover(rng.choice(population), rng.choice(population), rng), rng)
        assert ops.problem(child) is None, ops.problem(child)
        assert [t.replace(weight=1.0) for t in child.terms] == \
            [w.terms[0].replace(weight=1.0) for w in winners.values()]
        off += len(child.active_terms) < 3
        population.append(child)
    assert off > 0
    single = Stage2Ops(space, {'global': winners['global']})
    assert 0.0 not in single.options['global']                     # the only term cannot be switched off


def genes(term):
    """Slot ops (identities as 'no': the search cannot tell 'scale_r1' from 'no', one canonical genome), the
    distance and the weight."""
    return ['no' if op.name in IDENTITY_OPS else op.name for op in term.transforms] + [term.distance.name,
                                                                                      term.weight]


def run_synthetic_search(space, seed):
    """Synthetic fitness on real genomes, a function of the genome alone: a hidden target genome (one term per
    input); each input scores the fraction of its genes (slot ops, distance, weight) equal to the target term's,
    and the value is the mean over inputs plus seeded noise. Returns (controller, targets, proposals)."""
    rng = random.Random(seed)
    stage1, stage2 = build_ops(space, ['global', 'logits'])
    weights = {'global': 2.0, 'logits': 1.0}          # options of both stages
    # (on the scale of the target's distance: a published method's for sse)
    targets = {name: stage1[name].on_scale(stage1[name].sample(rng).terms[0].replace(weight=weights[name]))
               for name in stage1}

    def fitness(p):
        score = 0.0
        for name, target in targets.items():
            term = p.genome.term(name)
            if term is not None and term.active:
                score += sum(x == y for x, y in zip(genes(term), genes(target))) / len(genes(target))
        return Result.complete(score / len(targets) + random.Random(f'{p.key}/{p.seed}').gauss(0, 0.005))

    plan = StagePlan(stage1_inputs=('global', 'logits'), population_size=12, generations=16,
                     stage2_population_size=6, stage2_generations=4, reeval_top_k=2, seed=seed)
    evo = Evolution(plan, stage1, stage2)
    handed, in_flight = [], []
    while not evo.finished:
        new = evo.ask(4 - len(in_flight))
        handed += new
        in_flight += new
        p = in_flight.pop(0)
        evo.tell(p, fitness(p))
    return evo, stage1, targets, handed


def random_hit_probability(space, target):
    """Chance that one ``Space.sample_term`` draw has the target's ops, distance and weight: uniform op per slot,
    uniform distance among those allowed after the cascade, uniform stage-1 weight."""
    probability = 1.0 / len(space.weight_options(target.input, 1))
    for table in space.slot_tables(target.input):
        probability /= len(table)
    return probability / len(space.distances_for(target.input, target.transforms))


def test_real_space_search_beats_random_sampling_on_a_hidden_target(space):
    """Over 3 seeds: stage 1 finds the hidden global formulation after far fewer evaluations than random
    sampling needs on average (1 / hit probability, ~18,000 draws), each input's winner is its target in at
    least 5 of 6 cases, and stage 2 finds the target weights of the winners."""
    evolution_hits, random_hits, exact = [], [], 0
    for seed in range(3):
        evo, stage1, targets, handed = run_synthetic_search(space, seed)
        explored = [p for p in handed if p.kind == EXPLORE]
        assert len({p.key for p in explored}) == len(explored)
        winners = evo.winners()
        exact += sum(genes(winners[name].genome.terms[0]) == genes(targets[name]) for name in stage1)
        best = evo.best()
        assert best.stage == 2
        assert [(t.input, t.weight) for t in best.genome.terms if t.active] == \
            [(name, targets[name].weight) for name in winners]
        stream = [genes(p.genome.terms[0]) for p in explored if p.input == 'global']
        target = genes(targets['global'])
        evolution_hits.append(stream.index(target) + 1 if target in stream else 2 * len(stream))
        random_hits.append(1 / random_hit_probability(space, targets['global']))
    assert exact >= 4
    assert sum(random_hits) > 20 * sum(evolution_hits), (evolution_hits, random_hits)


def test_real_space_replay_from_json_records_continues_identically(space):
    """Records as storage keeps them (genome as JSON text, plain types) rebuild the controller: the trials that
    were running are proposed again and the rest of the search is unchanged."""
    stage1, stage2 = build_ops(space, ['fg_bg', 'localization'], family='gfl')
    plan = StagePlan(stage1_inputs=('fg_bg', 'localization'), population_size=5, generations=3,
                     stage2_population_size=4, stage2_generations=2, reeval_top_k=2, seed=5)

    def fitness(p):
        return Result.complete(random.Random(p.key).random() + 0.01 * p.seed)

    def run(evo, stop=None, in_flight=()):
        handed, in_flight, told = [], list(in_flight), 0
        while not evo.finished and told != stop:
            new = evo.ask(3 - len(in_flight))
            handed += new
            in_flight += new
            p = in_flight.pop(0)
            evo.tell(p, fitness(p))
            told += 1
        return handed, in_flight

    def signature(p):
        return (p.key, p.seed, p.stage, p.input, p.generation, p.kind, p.parents, p.genome.to_json())

    reference = Evolution(plan, stage1, stage2)
    everything, _ = run(reference)
    dead = Evolution(plan, stage1, stage2)
    before, running = run(dead, stop=len(everything) // 2)
    history = [dict(r.to_dict(), genome=r.genome.to_json()) for r in dead.records()]
    revived = Evolution.replay(history, plan, stage1, stage2)
    assert running and {p.id for p in running} <= {p.id for p in revived.ask(100)}
    revived = Evolution.replay(history, plan, stage1, stage2)
    after, _ = run(revived)
    finished_before = [signature(p) for p in before if p not in running]
    assert sorted(finished_before + [signature(p) for p in after]) == sorted(map(signature, everything))
    assert revived.best().key == reference.best().key and revived.stage2_winner().stage == 2
    assert Genome.from_json(revived.best().genome.to_json()).key() == revived.best().key
