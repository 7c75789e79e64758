"""Genome (JSON, canonical form, stable key, formula) and search_space.yaml loading, validation, sampling."""
import json
import os
import random
import subprocess
import sys

import pytest
import yaml

from distill_core import ConfigError, Genome
from distill_core.genome import OpSpec, Term
from search.space import DEFAULT_SPACE_FILE, Space, read_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def term(input, ops, distance='l1', weight=1.0, **kw):
    return Term(input, kw.pop('enabled', True), tuple(OpSpec.parse(o) for o in ops), OpSpec.parse(distance), weight)


PUBLISHED_RETINA = Genome((term('global', ['catt', 'scale_r2', 'norm_N'], weight=6),
                           term('fg_bg', ['no', 'local_s4', 'norm_HW'], weight=2)))


# ------------------------------------------------------------------------------------------ genome
def test_json_round_trip_and_formula():
    g = PUBLISHED_RETINA.with_term(term('logits', ['softmax_C'], 'pearson', 0.1))
    again = Genome.from_json(g.to_json())
    assert again == g and again.key() == g.key()
    assert g.formula() == ('global: catt -> scale_r2 -> norm_N | l1 x6; fg_bg: no -> local_s4 -> norm_HW | l1 x2; '
                           'logits: softmax_C | pearson x0.1')
    hot = g.with_term(term('global', [{'name': 'catt', 'params': {'temperature': 0.25}}, 'no', 'norm_N'], 'kl'))
    assert hot.term('global').formula() == 'global: catt(temperature=0.25) -> no -> norm_N | kl x1'
    assert Genome.parse(json.loads(hot.to_json())) == hot


def test_canonical_form_merges_equivalent_genomes():
    a = Genome((term('global', ['no', 'scale_r1', 'norm_C']),))
    b = Genome((term('global', ['no', 'no', 'norm_C']),))
    c = Genome((term('global', [{'type': 'no'}, 'scale_r1', 'norm_C'], weight=1),
                term('instance', ['catt', 'no', 'no'], enabled=False)))       # disabled term = absent
    d = Genome((term('global', ['no', 'no', 'norm_C']), term('logits', ['no'], weight=0)))   # weight 0 = absent
    assert a.key() == b.key() == c.key() == d.key()
    explicit = Genome((term('global', [{'name': 'catt', 'params': {'temperature': 0.5}}, 'no', 'no'],
                            {'name': 'kl', 'params': {'dim': 'C'}}),))
    implicit = Genome((term('global', ['catt', 'no', 'no'], 'kl'),))
    assert explicit.key() == implicit.key(), 'default parameters are part of the canonical form'
    hotter = Genome((term('global', [{'name': 'catt', 'params': {'temperature': 0.25}}, 'no', 'no'], 'kl'),))
    assert hotter.key() != implicit.key()
    assert a.key() != Genome((term('global', ['no', 'scale_r2', 'norm_C']),)).key()
    assert a.key() != Genome((term('global', ['no', 'scale_r1', 'norm_C'], weight=2),)).key()


def test_genome_is_immutable_and_editable_by_copy():
    g = PUBLISHED_RETINA
    with pytest.raises(Exception):
        g.terms = ()
    g2 = g.with_term(g.term('global').replace(weight=10.0))
    assert g.term('global').weight == 6.0 and g2.term('global').weight == 10.0
    assert g2.without('fg_bg').term('fg_bg') is None


def test_genome_errors():
    with pytest.raises(ConfigError, match='JSON'):
        Genome.from_json('{not json')
    with pytest.raises(ConfigError, match='unknown knowledge input'):
        Genome.from_dict({'terms': [{'input': 'nope'}]})
    with pytest.raises(ConfigError, match='weight'):
        term('global', ['no', 'no', 'no'], weight=-1)
    with pytest.raises(ConfigError, match='more than one term'):
        Genome((term('global', []), term('global', [])))
    with pytest.raises(ConfigError, match="unknown transform 'nope'"):
        Genome((term('global', ['nope']),)).key()
    with pytest.raises(ConfigError, match='no parameter'):
        Genome((term('global', [{'name': 'catt', 'params': {'temp': 1}}]),)).key()


KEY_SCRIPT = '''
import random, sys
sys.path.insert(0, {root!r})
from search.space import Space
space = Space.default()
rng = random.Random(7)
print(' '.join(space.sample_genome(rng, family='gfl').key() for _ in range(5)))
'''


def test_key_stable_across_processes():
    space = Space.default()
    rng = random.Random(7)
    here = ' '.join(space.sample_genome(rng, family='gfl').key() for _ in range(5))
    for seed in ('12345',):   # another hash seed than this process's
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, '-c', KEY_SCRIPT.format(root=ROOT)], capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == here


# ------------------------------------------------------------------------------------------ space
def test_default_space_contents():
    space = Space.default()
    assert space.inputs == ('global', 'fg_bg', 'instance', 'logits', 'localization', 'cross_head', 'mask')
    assert [len(t) for t in space.slot_tables('global')] == [9, 8, 15]   # the release's + the methods' ops
    assert space.slot_tables('localization') == ()
    assert space.weight_options('global', 1) == (1.0, 2.0, 5.0, 10.0)
    assert space.weight_options('logits', 2) == (0.0, 0.1, 1.0, 2.0)
    assert space.published['retinanet_r101_r50'].key() == PUBLISHED_RETINA.key()
    assert [t.formula() for t in space.published_terms('instance')] == [
        'instance: catt -> scale_r1 -> norm_C | l1 x50', 'instance: mask -> scale_r1 -> norm_C | pearson x1']
    # 9 x 8 x 15 cascades x 10 distances, minus kl after the 3 logsoftmax (x 9 x 8) and ssim after batch/channel
    # (slot 3) or attention_maps (slot 1), the cascades with both counted once
    assert space.size('global') == 9 * 8 * 15 * 10 - 9 * 8 * 3 - (9 * 8 * 2 + 8 * 15 - 8 * 2)
    assert sorted(space.methods) == ['fgd_focal', 'mgd', 'pkd']


def test_sampled_genomes_are_valid():
    space = Space.default()
    rng = random.Random(0)
    for family in ('retinanet', 'gfl', None):
        for _ in range(150):
            g = space.sample_genome(rng, family=family)
            space.validate(g, family=family)
            glob = g.term('global')
            if glob.distance.name == 'kl':
                assert not any(op.name.startswith('logsoftmax') for op in glob.transforms)
            if glob.distance.name == 'ssim':
                assert not {'batch', 'channel'} & {op.name for op in glob.transforms}
            loc = g.term('localization')
            assert loc.transforms == ()
            assert loc.distance.name in ('l1', 'smooth_l1', 'iou', 'giou', 'kl')
            if family != 'gfl':
                assert loc.distance.name != 'kl'
            assert g.term('logits').distance.name not in ('iou', 'giou', 'ssim')
    stage2 = space.sample_genome(rng, stage=2)
    assert all(t.weight in space.weight_options(t.input, 2) for t in stage2.terms)


def test_validate_names_the_problem():
    space = Space.default()
    with pytest.raises(ConfigError, match="op 'scale_r2' is not in slot 1"):
        space.validate(Genome((term('global', ['scale_r2', 'no', 'no']),)))
    with pytest.raises(ConfigError, match="distance 'iou' not allowed for the feature group"):
        space.validate(Genome((term('global', ['no', 'no', 'no'], 'iou'),)))
    with pytest.raises(ConfigError, match='ill-posed after'):
        space.validate(Genome((term('global', ['no', 'no', 'logsoftmax_C'], 'kl'),)))
    with pytest.raises(ConfigError, match='needs a detector family'):
        space.validate(Genome((term('localization', [], 'kl'),)), family='fcos')
    space.validate(Genome((term('localization', [], 'kl'),)), family='gfl')


def _write(tmp_path, data):
    path = tmp_path / 'space.yaml'
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _default_data():
    return read_yaml(DEFAULT_SPACE_FILE)


@pytest.mark.parametrize('edit, message', [
    (lambda d: d['groups']['feature']['slots'][0].append('drop'), r"groups.feature.slots\[0\]: unknown op 'drop'"),
    (lambda d: d['groups']['feature']['distances'].append('giou'),
     "groups.feature.distances: distance 'giou' is not allowed for the feature group"),
    (lambda d: d['groups']['response']['distances'].append('ssim'),
     "groups.response.distances: distance 'ssim' is not allowed for the response group"),
    (lambda d: d['groups']['feature']['slots'].__setitem__(1, []), r'groups.feature.slots\[1\]: expected a non-empty'),
    (lambda d: d['groups']['feature'].__setitem__('distances', []), 'groups.feature.distances: expected a non-empty'),
    (lambda d: d['weights']['stage1'].__setitem__('feature', [1, -2]), r'weights.stage1.feature: bad weight -2'),
    (lambda d: d['weights']['stage2'].__setitem__('global', ['x']), "weights.stage2.global: bad weight 'x'"),
    (lambda d: d['weights']['stage2'].__setitem__('global', [float('inf')]), 'weights.stage2.global: bad weight'),
    (lambda d: d['weights']['stage1'].__setitem__('response', [0, 1]), 'weights.stage1.response: weight 0'),
    (lambda d: d['weights']['stage2'].pop('logits'), 'weights.stage2.logits: missing'),
    (lambda d: d['params'].__setitem__('catt', {'temp': [1.0]}), "params.catt.temp: 'catt' has no such parameter"),
    (lambda d: d['params'].__setitem__('mask', {'ratio': [1.5]}), 'params.mask.ratio: option 1.5'),
    (lambda d: d['params'].__setitem__('kl', {'dim': ['W']}), 'params.kl.dim: option'),
    (lambda d: d.__setitem__('extra', 1), 'extra: unknown key'),
    (lambda d: d.__setitem__('inputs', ['global', 'boxes']), "inputs: unknown knowledge input 'boxes'"),
    (lambda d: d['family_only']['localization'].__setitem__('kl', ['yolo']), "unknown detector family 'yolo'"),
    (lambda d: d['published']['gfl_r101_r50']['global'].__setitem__('transforms', ['catt', 'norm_N', 'no']),
     "published.gfl_r101_r50.global: global: op 'norm_N' is not in slot 2"),
])
def test_invalid_space_files(tmp_path, edit, message):
    data = _default_data()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=message) as info:
        Space.from_file(path)
    assert str(info.value).startswith(path), 'the error names the file'


def test_bare_no_is_an_op_name(tmp_path):
    path = tmp_path / 'space.yaml'
    path.write_text(open(DEFAULT_SPACE_FILE).read().replace("'no'", 'no'))
    assert "[no, satt" in path.read_text()
    assert Space.from_file(str(path)).slot_tables('global')[0][0] == 'no'


def test_user_space_restricts(tmp_path):
    data = _default_data()
    data['inputs'] = ['global']
    data['groups'] = {'feature': {'slots': [['catt'], ['no', 'scale_r2'], ['norm_N']], 'distances': ['l1', 'cos']}}
    data['params'] = {'catt': {'temperature': [0.5, 1.0]}}
    data['family_only'] = {}
    data['weights']['stage2'] = {'global': [1, 2]}
    data['published'] = data['methods'] = {}   # (their ops are outside this space)
    space = Space.from_file(_write(tmp_path, data))
    rng = random.Random(3)
    seen = {space.sample_genome(rng).term('global').formula() for _ in range(600)}
    assert len(seen) == 2 * 2 * 2 * 4            # scale_r2|no x l1|cos x T in {0.5, 1} x weights {1,2,5,10}
    with pytest.raises(ConfigError, match='not in this space'):
        space.sample_term('logits', rng)
    with pytest.raises(ConfigError, match='not found'):
        Space.from_file(str(tmp_path / 'missing.yaml'))
