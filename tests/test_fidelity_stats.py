"""Rank statistics of the proxy-fidelity report against values computed by hand."""
import math

import pytest

from search.fidelity import choose_setting, parse_proxy_overrides, setting_label
from search.fidelity_stats import (average_ranks, fidelity_summary, kendall_tau, spearman_rho, std, top_half,
                                   top_k_regret)
from distill_core.errors import ConfigError


def test_kendall_tau_without_ties():
    # 6 pairs, only (2, 3) swapped: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_kendall_tau_b_with_ties():
    # pairs: (0,1) tie in x, (1,2) tie in y, the other 4 concordant: 4 / sqrt((6 - 1) * (6 - 1))
    assert kendall_tau([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None   # a constant ranking correlates with nothing


def test_spearman_rho_with_and_without_ties():
    # no ties: 1 - 6 * sum(d^2) / (n (n^2 - 1)) with d = (0, 1, 1, 0)
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert average_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    # ties: Pearson on ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): sxy = 4.5, sxx = 4.5, syy = 5
    assert spearman_rho([10, 20, 20, 30], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_regret_top_half_noise_and_spread():
    proxy, reference = [0.1, 0.3, 0.2, 0.05], [0.5, 0.4, 0.45, 0.1]
    assert top_k_regret(proxy, reference, 1) == pytest.approx(0.1)     # proxy picks #1 (0.4) instead of 0.5
    assert top_k_regret(proxy, reference, 3) == pytest.approx(0.0)     # its top 3 hold the best
    assert top_half(reference) == [0, 2]
    summary = fidelity_summary([[0.1, 0.1], [0.2, 0.4], [0.2, 0.2], [0.05, 0.05]], reference)
    means = [0.1, 0.3, 0.2, 0.05]
    assert summary['kendall_tau'] == pytest.approx(kendall_tau(means, reference))
    assert summary['kendall_tau_top_half'] == pytest.approx(kendall_tau([0.1, 0.2], [0.5, 0.45]))   # -1
    assert summary['seed_noise'] == pytest.approx((0 + std([0.2, 0.4]) + 0 + 0) / 4)
    assert summary['spread'] == pytest.approx(std(means))
    assert summary['noise_to_spread'] == pytest.approx(summary['seed_noise'] / summary['spread'])
    assert std([1.0]) is None


def test_proxy_overrides_are_every_combination_and_checked():
    proxy = dict(teacher=dict(config='t.py', checkpoint='t.pth'), student=dict(config='s.py'),
                 proxy=dict(train_images=240, val_images=60, iterations=40, batch_size=8))
    combos = parse_proxy_overrides(['iterations=20,40', 'train_images=120,240'], proxy, 'cfg')
    assert combos == [dict(iterations=20, train_images=120), dict(iterations=20, train_images=240),
                      dict(iterations=40, train_images=120), dict(iterations=40, train_images=240)]
    assert setting_label(combos[0]) == 'iterations=20 train_images=120'
    assert parse_proxy_overrides(None, proxy, 'cfg') == [{}]
    with pytest.raises(ConfigError, match="unknown proxy key 'iteration'"):
        parse_proxy_overrides(['iteration=20'], proxy, 'cfg')
    with pytest.raises(ConfigError, match='iterations'):
        parse_proxy_overrides(['iterations=0'], proxy, 'cfg')
    with pytest.raises(ConfigError, match='KEY=VALUE'):
        parse_proxy_overrides(['iterations'], proxy, 'cfg')


def test_cheapest_passing_setting():
    settings = {'a': dict(kendall_tau=0.7, seconds_per_run=30.0), 'b': dict(kendall_tau=0.65, seconds_per_run=10.0),
                'c': dict(kendall_tau=0.3, seconds_per_run=1.0), 'd': dict(kendall_tau=None, seconds_per_run=0.5)}
    assert choose_setting(settings, 0.6) == 'b'
    assert choose_setting(settings, 0.9) is None
