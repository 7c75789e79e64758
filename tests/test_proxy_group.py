"""Shared-teacher trials (workers/proxy.py ``run_proxy_group``): K candidates trained in lockstep on the same
batches against one teacher forward per step reproduce K single trials with the same seeds, and a failing
candidate leaves the group without stopping the others."""
import json

import pytest
import torch

from distill_core.genome import Genome, Term
from search.space import Space
from workers.proxy import TrialRejected, run_proxy_group, run_proxy_trial

from .demo_utils import ROOT, build_teacher_checkpoint
from .test_workers_proxy import search_config

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def cfg(tmp_path_factory, shapes_root):
    checkpoint = build_teacher_checkpoint('retinanet', tmp_path_factory.mktemp('teacher'))
    return search_config(checkpoint, shapes_root, iterations=3, report_interval=1, eval_interval=3)


@pytest.fixture(scope='module')
def genomes():
    """The published RetinaNet formulation (global + fg/bg; no randomness) and a global term behind the random
    ``mask`` op (draws from torch's global generator every step: the per-candidate streams must isolate it)."""
    published = Space.default().published['retinanet_r101_r50']
    masked = Genome((Term('global', transforms=({'name': 'mask', 'params': {'ratio': 0.5}},), distance='l2',
                          weight=1.0),))
    return [published.to_json(), masked.to_json()]


class TeacherForwardCounter:
    """Counts calls of the teacher backbone(s) of the distillers built while active (a forward hook on the real
    module: ``DetectionDistiller`` builds the teacher, so the hook is attached in ``init_weights``)."""

    def __init__(self, monkeypatch):
        from distill_core.distiller import DetectionDistiller
        self.calls = 0
        self.teachers = []
        original = DetectionDistiller.init_weights

        def init_weights(model):
            original(model)
            self.teachers.append(model.teacher)
            model.teacher.backbone.register_forward_hook(lambda *_: self._count())

        monkeypatch.setattr(DetectionDistiller, 'init_weights', init_weights)

    def _count(self):
        self.calls += 1


@pytest.fixture(scope='module')
def singles(cfg, genomes):
    out = []
    for genome in genomes:
        reports = []
        result = run_proxy_trial(cfg, genome, seed=0, report=reports.append, base_dir=ROOT)
        out.append((result, reports))
    return out


def test_group_equals_single_trials_and_runs_the_teacher_once_per_step(cfg, genomes, singles, monkeypatch):
    counter = TeacherForwardCounter(monkeypatch)
    reports = [[], []]
    results = run_proxy_group(cfg, genomes, [0, 0], [reports[0].append, reports[1].append], base_dir=ROOT)
    # one teacher forward per training step for both candidates (evaluation runs students only)
    assert counter.calls == cfg['proxy']['iterations']
    assert len(counter.teachers) == 2
    for (single, single_reports), result, group_reports in zip(singles, results, reports):
        assert result.failure is None
        assert [r['iteration'] for r in group_reports] == [1, 2, 3]
        assert group_reports == result.history
        # equal losses and AP up to float noise (identical kernels on identical inputs: in practice bit-equal)
        for ours, theirs in zip(group_reports, single_reports):
            assert set(ours) == set(theirs)
            for key, value in theirs.items():
                assert ours[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key
        assert json.dumps(result.metrics) == json.dumps(single.metrics)
    # the masked candidate's losses differ from the published one's: two different students were trained
    assert reports[0][0]['loss'] != reports[1][0]['loss']


def test_single_trial_runs_the_teacher_every_step(cfg, genomes, monkeypatch):
    counter = TeacherForwardCounter(monkeypatch)
    run_proxy_trial(dict(cfg, proxy=dict(cfg['proxy'], iterations=2, eval_interval=None)), genomes[0], seed=0,
                    base_dir=ROOT)
    assert counter.calls == 2


def test_failing_candidate_leaves_the_group_others_go_on(cfg, genomes, singles):
    exploding = Genome((Term('global', transforms=(), distance='l2', weight=1e12),))
    results = run_proxy_group(cfg, [exploding, genomes[1]], [0, 0], base_dir=ROOT)
    assert isinstance(results[0].failure, TrialRejected)
    assert results[0].failure.reason.startswith('exploding loss_searched_global')
    assert results[0].metrics == {} and results[0].iterations == 1
    assert results[1].failure is None
    assert json.dumps(results[1].metrics) == json.dumps(singles[1][0].metrics)


def test_group_arguments_are_checked(cfg, genomes):
    with pytest.raises(ValueError, match='equally many'):
        run_proxy_group(cfg, genomes, [0], base_dir=ROOT)
