"""The evolution controller on synthetic spaces and fitness (pure Python, a few seconds).

``ToySpace`` is a small integer-gene space with a pairing rule like the real one (gene 3 = 2 'kl' needs gene 2 in
the 'logsoftmax' values); fitness is the fraction of genes matching a hidden target, plus seeded noise.
"""
import math
import random
import statistics

import pytest

from distill_core.errors import ConfigError
from search.evolution import (EXPLORE, FAIL, REEVAL, STAGE2_INPUT, Evolution, Record, Result,
                              StagePlan)

STAGE1_SIZES = (5, 8, 14, 7, 7)     # slot1, slot2, slot3, distance, weight: 27,440 combinations
KL, LOGSOFTMAX = 2, (11, 12, 13)


class ToySpace:
    """Integer genes with per-gene cardinalities; ``rule`` rejects kl without logsoftmax when ``paired``."""

    def __init__(self, name, sizes, seeds=(), paired=True):
        self.name, self.sizes, self._seeds, self.paired = name, tuple(sizes), list(seeds), paired

    def validate(self, g):
        if len(g) != len(self.sizes) or any(not 0 <= v < n for v, n in zip(g, self.sizes)):
            return False
        return not (self.paired and g[3] == KL and g[2] not in LOGSOFTMAX)

    def sample(self, rng):
        while True:
            g = tuple(rng.randrange(n) for n in self.sizes)
            if self.validate(g):
                return g

    def mutate(self, g, rng):
        for _ in range(100):
            child = list(g)
            i = rng.randrange(len(g))
            child[i] = rng.choice([v for v in range(self.sizes[i]) if v != g[i]] or [g[i]])
            if self.validate(tuple(child)):
                return tuple(child)
        return g

    def crossover(self, a, b, rng):
        for _ in range(100):
            child = tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))
            if self.validate(child):
                return child
        return a

    def key(self, g):
        return f'{self.name}:{",".join(map(str, g))}'

    def seeds(self):
        return list(self._seeds)


def match_fitness(targets, noise=0.01):
    """value = fraction of genes equal to the target of the proposal's input, + noise seeded by (key, seed)."""
    def fitness(p):
        target = targets[p.input]
        score = sum(a == b for a, b in zip(p.genome, target)) / len(target)
        return Result.complete(score + random.Random(f'{p.key}/{p.seed}').gauss(0, noise))
    return fitness


def drive(evo, fitness, workers=4, rng=None, stop_after=None, in_flight=()):
    """Simulated workers: keep ``workers`` trials in flight, finish the oldest (or a random one with ``rng``).
    Returns (proposals handed out, in-flight proposals when stopped)."""
    handed, in_flight, told = [], list(in_flight), 0
    while not evo.finished:
        new = evo.ask(workers - len(in_flight))
        handed += new
        in_flight += new
        assert in_flight, 'controller stalled: nothing in flight and nothing to ask'
        p = in_flight.pop(rng.randrange(len(in_flight)) if rng else 0)
        evo.tell(p.id, fitness(p))
        told += 1
        if stop_after is not None and told == stop_after:
            break
    return handed, in_flight


def two_input_setup(seed=0, **plan_overrides):
    plan = StagePlan(**{**dict(stage1_inputs=('global', 'logits'), population_size=10, generations=5,
                                stage2_population_size=8, stage2_generations=4, tournament_size=3,
                                elite_count=2, reeval_top_k=2, reeval_seeds=1, seed=seed), **plan_overrides})
    ops = {'global': ToySpace('global', STAGE1_SIZES, seeds=[(1, 2, 3, 0, 3), (0, 0, 0, 0, 0)]),
           'logits': ToySpace('logits', (14, 7, 1, 1, 3), paired=False)}

    def stage2(winners):
        assert list(winners) == ['global', 'logits']
        return ToySpace('combined', (5, 5), seeds=[(2, 2)], paired=False)

    targets = {'global': (4, 7, 12, KL, 5), 'logits': (3, 4, 0, 0, 1), STAGE2_INPUT: (3, 1)}
    return plan, ops, stage2, targets


def signature(p):
    return (p.key, p.seed, p.stage, p.input, p.generation, p.kind, p.parents)


# ----------------------------------------------------------------------------------------- plan

def test_plan_from_config_reads_keys_and_rejects_bad_ones():
    plan = StagePlan.from_config(dict(stage1_inputs=['global', 'fg_bg'], population_size=8, generations=3,
                                      storage='x'), 'configs/search/demo.py', other_keys=('storage',))
    assert plan.stage1_inputs == ('global', 'fg_bg') and plan.population_size == 8
    # budget: 8 + 2 * (8 - 2) explorations + 3 re-evaluations per input; stage 2: 12 + 3 * 10 + 3
    assert plan.max_evaluations() == 2 * (8 + 12 + 3 * 2) + (12 + 30 + 3 * 2)   # 2 extra seeds per finalist
    with pytest.raises(ConfigError, match=r'demo\.py.*search\.populaton_size.*population_size'):
        StagePlan.from_config(dict(populaton_size=8), 'configs/search/demo.py')
    with pytest.raises(ConfigError, match=r'search\.elite_count'):
        StagePlan.from_config(dict(population_size=4, elite_count=4))
    with pytest.raises(ConfigError, match=r'search\.mutation_prob'):
        StagePlan.from_config(dict(mutation_prob=1.5))
    with pytest.raises(ConfigError, match=r'search\.generations'):
        StagePlan.from_config(dict(generations=0))
    with pytest.raises(ConfigError, match=r'search\.stage1_inputs'):
        StagePlan.from_config(dict(stage1_inputs='global'))
    with pytest.raises(ConfigError, match=r'search\.stage1_inputs'):
        Evolution(StagePlan(stage1_inputs=('global', 'nope')), {'global': ToySpace('global', STAGE1_SIZES)})


def test_result_non_finite_complete_is_a_failure():
    assert Result.complete(0.3).fit
    nan = Result.complete(float('nan'))
    assert nan.state == FAIL and 'non-finite' in nan.reason
    with pytest.raises(ValueError):
        Result('RUNNING')


# ---------------------------------------------------------------------------------- operators

def test_offspring_stay_inside_the_space():
    plan, ops, stage2, targets = two_input_setup(generations=8)
    evo = Evolution(plan, ops, stage2)
    handed, _ = drive(evo, match_fitness(targets))
    spaces = {**ops, STAGE2_INPUT: stage2({'global': None, 'logits': None})}
    assert len(handed) > 100
    for p in handed:
        assert spaces[p.input].validate(p.genome), p
    kinds = {p.kind for p in handed}
    assert kinds == {EXPLORE, REEVAL}
    # offspring have parents from the same stream, all explored before them
    explored = {p.key for p in handed if p.kind == EXPLORE}
    for p in handed:
        if p.kind == EXPLORE and p.generation > 0:
            assert 1 <= len(p.parents) <= 2 and set(p.parents) <= explored


def test_generation_zero_holds_the_published_seeds_then_random_genomes():
    plan, ops, stage2, targets = two_input_setup()
    evo = Evolution(plan, ops, stage2)
    first = evo.ask(100)
    global_g0 = [p for p in first if p.input == 'global']
    assert [p.genome for p in global_g0[:2]] == [(1, 2, 3, 0, 3), (0, 0, 0, 0, 0)]
    assert len(global_g0) == plan.population_size and all(p.generation == 0 for p in first)
    assert len({p.key for p in global_g0}) == plan.population_size
    # both inputs are in flight at once (interleaved), and nothing else is ready until results come back
    assert {p.input for p in first} == {'global', 'logits'} and len(first) == 2 * plan.population_size
    assert evo.ask(5) == []


def test_elitism_keeps_the_best_of_each_generation():
    plan, ops, stage2, targets = two_input_setup(generations=8, elite_count=1, mutation_prob=1.0)
    evo = Evolution(plan, ops, stage2)
    fitness = match_fitness(targets, noise=0.05)
    values = {}
    previous = {}
    checked = 0
    in_flight = []
    while not evo.finished:
        in_flight += evo.ask(4)
        p = in_flight.pop(0)
        result = fitness(p)
        values[p.key] = result.value
        evo.tell(p, result)
        for name in ('global', 'logits'):
            stream = next(s for s in evo.streams if s.name == name)
            if stream.phase != 'explore':
                continue
            gen, pop = stream.generation, evo.population(name)
            if name in previous and previous[name][0] == gen - 1 and gen > 1:
                best_before = max(previous[name][1], key=values.get)
                assert best_before in pop
                checked += 1
            previous[name] = (gen, pop)
    assert checked >= 8


def test_no_key_is_explored_twice_and_a_small_space_ends_early():
    plan = StagePlan(stage1_inputs=('logits',), population_size=6, generations=30, stage2_generations=0,
                     elite_count=1, reeval_top_k=1)
    ops = {'logits': ToySpace('logits', (3, 3), paired=False)}        # 9 genomes in all
    evo = Evolution(plan, ops)
    handed, _ = drive(evo, match_fitness({'logits': (2, 1)}))
    explored = [p.key for p in handed if p.kind == EXPLORE]
    assert len(explored) == len(set(explored)) == 9
    assert evo.progress()['streams'][0]['exhausted']
    assert evo.best().genome == (2, 1)
    assert evo.progress()['note'] == 'stage 2 not planned'


def test_failed_and_pruned_candidates_are_unfit_and_never_reproposed():
    plan, ops, stage2, targets = two_input_setup()
    good = match_fitness(targets)

    def fitness(p):   # the target and everything with distance 'kl' diverge
        if p.input == 'global' and p.genome[3] == KL:
            return Result.fail('loss is non-finite at iteration 1')
        if p.input == 'logits' and p.genome[0] == 3:
            return Result.pruned(0.99)
        return good(p)

    evo = Evolution(plan, ops, stage2)
    handed, _ = drive(evo, fitness)
    explored = [p.key for p in handed if p.kind == EXPLORE]
    assert len(explored) == len(set(explored))
    counts = evo.progress()['counts']
    assert counts['fail'] > 0 and counts['pruned'] > 0
    winners = evo.winners()
    assert winners['global'].genome[3] != KL and winners['logits'].genome[0] != 3
    assert all(p.genome[3] != KL for p in handed if p.kind == REEVAL and p.input == 'global')


# ------------------------------------------------------------------------------- re-evaluation

def test_finalists_are_reevaluated_with_another_seed_and_the_mean_decides():
    plan = StagePlan(stage1_inputs=('logits',), population_size=6, generations=1, stage2_generations=0,
                     elite_count=0, reeval_top_k=2, reeval_seeds=1, train_seed=7)
    ops = {'logits': ToySpace('logits', (6,), paired=False)}
    table = {7: [0.1, 0.2, 0.3, 0.4, 0.5, 0.9], 8: [0.1, 0.2, 0.3, 0.4, 0.6, 0.0]}
    evo = Evolution(plan, ops)
    handed, _ = drive(evo, lambda p: Result.complete(table[p.seed][p.genome[0]]))
    reevals = [p for p in handed if p.kind == REEVAL]
    assert sorted(p.genome for p in reevals) == [(4,), (5,)]           # the top 2 by first value
    assert all(p.seed == 8 and p.parents == (p.key,) for p in reevals)
    best = evo.best()
    assert best.genome == (4,) and best.value == pytest.approx(0.55) and best.evaluations == 2


def test_certain_finalists_are_reevaluated_while_the_last_generation_has_stragglers():
    """A worker freed during the last generation re-evaluates a genome that is a finalist whatever the
    stragglers give, instead of idling; the trials run are exactly those of the ordinary order."""
    plan = StagePlan(stage1_inputs=('logits',), population_size=6, generations=1, stage2_generations=0,
                     elite_count=0, reeval_top_k=3, reeval_seeds=1, train_seed=7)
    ops = {'logits': ToySpace('logits', (6,), paired=False)}
    table = {7: [0.1, 0.2, 0.3, 0.4, 0.5, 0.9], 8: [0.1, 0.2, 0.3, 0.4, 0.6, 0.0]}

    def value(p):
        return Result.complete(table[p.seed][p.genome[0]])

    evo = Evolution(plan, ops)
    batch = evo.ask(6)
    assert all(p.kind == EXPLORE for p in batch)
    by_gene = {p.genome[0]: p for p in batch}
    for gene in (0, 1, 2, 3):                    # genes 4 and 5 still running: only the best told (gene 3)
        evo.tell(by_gene[gene], value(by_gene[gene]))   # is certain: 0 ranked above it + 2 untold < 3
    handed = list(batch)
    early = evo.ask(6)
    handed += early
    assert [p.genome for p in early] == [(3,)] and early[0].kind == REEVAL and early[0].seed == 8
    assert early[0].generation == 1 and early[0].parents == (early[0].key,)
    evo.tell(by_gene[4], value(by_gene[4]))      # one straggler left: gene 4 becomes certain too
    second = evo.ask(6)
    handed += second
    assert [p.genome for p in second] == [(4,)]
    evo.tell(by_gene[5], value(by_gene[5]))      # the straggler wins: the closed generation adds only its own
    rest = evo.ask(6)
    handed += rest
    assert [p.genome for p in rest] == [(5,)] and evo.ask(6) == []
    for p in early + rest:
        evo.tell(p, value(p))
    assert not evo.finished                      # gene 4's re-evaluation is still in flight
    evo.tell(second[0], value(second[0]))
    assert evo.finished and evo.best().genome == (4,) and evo.best().value == pytest.approx(0.55)

    # exactly the trials of the ordinary order (the whole generation told first, no early re-evaluation)
    ordinary = Evolution(plan, ops)
    ordinary_handed, _ = drive(ordinary, value, workers=1)
    assert sorted(map(signature, handed)) == sorted(map(signature, ordinary_handed))
    assert ordinary.best().key == evo.best().key


# -------------------------------------------------------------------------------------- replay

def test_results_do_not_depend_on_worker_count_or_completion_order():
    plan, ops, stage2, targets = two_input_setup()
    fitness = match_fitness(targets)
    runs = []
    for workers, order in ((1, None), (4, None), (7, random.Random(3))):
        evo = Evolution(plan, ops, stage2)
        handed, _ = drive(evo, fitness, workers=workers, rng=order)
        runs.append((sorted(map(signature, handed)), evo.best().key))
    assert runs[0] == runs[1] == runs[2]


def test_replay_after_an_interruption_at_every_point_continues_identically():
    plan, ops, stage2, targets = two_input_setup(population_size=6, generations=3, stage2_population_size=5,
                                                 stage2_generations=2)
    fitness = match_fitness(targets)
    reference = Evolution(plan, ops, stage2)
    handed, _ = drive(reference, fitness, workers=3)
    records = reference.records()
    assert len(records) == len(handed) > 40
    for stop in range(len(records)):
        dead = Evolution(plan, ops, stage2)
        before, in_flight = drive(dead, fitness, workers=3, stop_after=stop) if stop else ([], [])
        history = [r.to_dict() for r in dead.records()]
        # storage marks the trials that were running as failed-because-interrupted: not results
        history += [Record(p.key, p.seed, FAIL, stage=p.stage, input=p.input, interrupted=True).to_dict()
                    for p in in_flight]
        revived = Evolution.replay(history, plan, ops, stage2)
        twin = Evolution.replay(history, plan, ops, stage2)
        assert [signature(p) for p in revived.ask(3)] == [signature(p) for p in twin.ask(3)]
        revived = Evolution.replay(history, plan, ops, stage2)
        assert revived.progress()['counts']['replayed'] == stop
        after, _ = drive(revived, fitness, workers=3)
        told_before = [signature(p) for p in before if p not in in_flight]
        # nothing finished is run again; the in-flight trials are proposed again; the rest is unchanged
        assert not set(told_before) & set(map(signature, after))
        assert sorted(told_before + [signature(p) for p in after]) == sorted(map(signature, handed))
        assert revived.best().key == reference.best().key


def test_stage2_reuses_a_stage1_result_instead_of_rerunning_it():
    plan = StagePlan(stage1_inputs=('logits',), population_size=4, generations=2, elite_count=1,
                     stage2_population_size=4, stage2_generations=2, reeval_top_k=1)
    ops = {'logits': ToySpace('logits', (8,), paired=False)}

    class SameKeys(ToySpace):  # stage-2 genome (w,) is the stage-1 genome (w,): a single-term combination
        def key(self, g):
            return f'logits:{g[0]}'

    evo = Evolution(plan, ops, lambda winners: SameKeys('combined', (8,), paired=False))
    handed, _ = drive(evo, match_fitness({'logits': (5,), STAGE2_INPUT: (5,)}))
    trials = [(p.key, p.seed) for p in handed]
    assert len(trials) == len(set(trials))
    assert evo.progress()['counts']['reused'] > 0
    assert evo.best().genome == (5,)


# ------------------------------------------------------------------------------------ efficiency

def test_evolution_finds_the_optimum_far_faster_than_random_sampling():
    """Both stages: each stage-1 input has a hidden target formulation and stage 2 a hidden weight vector.
    Evolution (16 + 23 x 14 explorations per stage-1 input, 12 + 11 x 10 in stage 2) must end on the optimum
    in at least 4 of 5 seeds; random sampling without repeats over the same stage-1 space (24,360 valid genomes)
    needs on average more than 10 times as many draws as evolution to hit a stage-1 target."""
    evo_hits, random_hits, found = [], [], 0
    for seed in range(5):
        rng = random.Random(100 + seed)
        plan = StagePlan(stage1_inputs=('global', 'instance'), population_size=16, generations=24,
                         stage2_population_size=12, stage2_generations=12, elite_count=2, tournament_size=3,
                         mutation_prob=0.9, crossover_prob=0.5, reeval_top_k=3, seed=seed)
        ops = {name: ToySpace(name, STAGE1_SIZES) for name in plan.stage1_inputs}
        targets = {name: ops[name].sample(rng) for name in plan.stage1_inputs}
        targets[STAGE2_INPUT] = tuple(rng.randrange(7) for _ in range(4))
        stage2_space = ToySpace('combined', (7, 7, 7, 7), paired=False)
        evo = Evolution(plan, ops, lambda winners: stage2_space)
        handed, _ = drive(evo, match_fitness(targets), workers=8)
        for name in plan.stage1_inputs:
            stream = [p.genome for p in handed if p.input == name and p.kind == EXPLORE]
            evo_hits.append(stream.index(targets[name]) + 1 if targets[name] in stream else len(stream) * 2)
        winners = evo.winners()
        best = evo.stage2_winner()   # the toy stages score on different scales: compare each with its target
        if all(winners[n].genome == targets[n] for n in plan.stage1_inputs) and \
                best.genome == targets[STAGE2_INPUT]:
            found += 1
        for name in plan.stage1_inputs:   # random sampling without repeats over the same space
            draw_rng, drawn, target = random.Random(1000 + seed), set(), targets[name]
            while target not in drawn and len(drawn) < 6000:
                drawn.add(ops[name].sample(draw_rng))
            random_hits.append(len(drawn))
    assert found >= 4, found
    assert statistics.mean(random_hits) > 10 * statistics.mean(evo_hits), (evo_hits, random_hits)


def test_progress_reports_stage_generation_counts_and_best():
    plan, ops, stage2, targets = two_input_setup()
    evo = Evolution(plan, ops, stage2)
    _, in_flight = drive(evo, match_fitness(targets), stop_after=25)
    progress = evo.progress()
    assert progress['stage'] == 1 and not progress['finished']
    assert progress['counts']['complete'] == 25 and progress['counts']['in_flight'] == len(in_flight)
    assert {s['input'] for s in progress['streams']} == {'global', 'logits'}
    assert progress['best']['value'] == max(r.value for r in evo.records())
    drive(evo, match_fitness(targets), in_flight=in_flight)
    progress = evo.progress()
    assert progress['finished'] and progress['stage'] == 2 and progress['best']['input'] in (STAGE2_INPUT,
                                                                                             'global', 'logits')
    assert math.isfinite(progress['best']['value'])


def test_ask_with_a_seed_hands_out_only_that_seed_round_robin_and_keeps_the_rest():
    """Shared-teacher groups (search/searcher.py) ask for proposals of one training seed; the other ready
    proposals stay, in their order, for later asks."""
    plan = StagePlan(stage1_inputs=('a', 'b'), population_size=3, generations=1, stage2_generations=0,
                     elite_count=0, tournament_size=2, reeval_top_k=2, reeval_seeds=2, train_seed=0)
    ops = {name: ToySpace(name, (6, 6), paired=False) for name in ('a', 'b')}
    fitness = match_fitness({'a': (1, 1), 'b': (2, 2)})
    evo = Evolution(plan, ops)
    explore = evo.ask(100, seed=0)
    assert len(explore) == 6 and {p.seed for p in explore} == {0}
    assert [p.input for p in explore] == ['a', 'b', 'a', 'b', 'a', 'b']   # round-robin as without a seed
    assert evo.ask(5, seed=1) == []                                        # no seed-1 work before the reevals
    for p in explore:
        evo.tell(p, fitness(p))
    # each input re-evaluates its 2 finalists with seeds 1 and 2: ready [f1@1, f1@2, f2@1, f2@2] per input
    twin = Evolution(plan, ops)
    for p in twin.ask(100):
        twin.tell(p, fitness(p))
    plain = twin.ask(100)
    assert [p.seed for p in plain] == [1, 1, 2, 2, 1, 1, 2, 2]
    seed2 = evo.ask(3, seed=2)
    assert [(p.input, p.seed) for p in seed2] == [('a', 2), ('b', 2), ('a', 2)]
    seed2 += evo.ask(10, seed=2)
    assert [(p.input, p.seed) for p in seed2[3:]] == [('b', 2)]
    assert evo.ask(10, seed=7) == []
    seed1 = evo.ask(10)
    assert [(p.input, p.seed) for p in seed1] == [('a', 1), ('b', 1), ('a', 1), ('b', 1)]
    assert evo.ask(10) == []
    # the same proposals as the plain asks, each handed out once (in the order of its seed's proposals)
    assert sorted(map(signature, seed2 + seed1)) == sorted(map(signature, plain))
    assert [signature(p) for p in seed2] == [signature(p) for p in plain if p.seed == 2]
    assert len(evo.in_flight()) == 8


def test_the_answer_is_the_best_mean_and_a_tie_keeps_the_incumbent():
    """Every contender (the stage-1 winners, then stage 2's) is decided by its mean over 1 + reeval_seeds seeds;
    a later one replaces the incumbent only with a strictly higher mean, and the decision reports the contenders
    within one std of the answer (where seed noise could flip it)."""
    plan, ops, stage2, _ = two_input_setup(reeval_seeds=2)
    evo = Evolution(plan, ops, stage2)
    drive(evo, lambda p: Result.complete(0.5))   # every genome equally good: the incumbent must stay
    contenders = evo.contenders()
    assert [c.input for c in contenders[:2]] == ['global', 'logits'] and len(contenders) == 3
    assert all(c.evaluations == 3 and c.std == 0.0 for c in contenders)
    assert evo.best().key == contenders[0].key
    decision = evo.decision()
    assert decision['key'] == contenders[0].key and decision['std'] == 0.0
    assert len(decision['within_one_std']) == 2   # equal means: either could win on other seeds

    plan, ops, stage2, targets = two_input_setup(reeval_seeds=2)
    evo = Evolution(plan, ops, stage2)
    fitness = match_fitness(targets, noise=0.0)

    def stage2_better(p):   # the stage-2 combinations score 0.1 above any stage-1 formulation
        result = fitness(p)
        return Result.complete(result.value + (0.1 if p.stage == 2 else 0.0))

    drive(evo, stage2_better)
    assert evo.best().key == evo.stage2_winner().key and evo.best().value > max(
        w.value for w in evo.winners().values())
    assert evo.progress()['decision']['key'] == evo.best().key
