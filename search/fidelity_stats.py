"""How well a cheap ranking (a proxy's fitness) predicts an expensive one (the reference AP): pure Python.

Kendall's tau-b and Spearman's rho handle ties the usual way (tau-b's tie correction; rho as Pearson's r on
average ranks), so they agree with ``scipy.stats.kendalltau`` / ``spearmanr`` on the same numbers. A correlation
is undefined (``None``) with fewer than two members or when either side is constant.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)) over all pairs."""
    _check(x, y)
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                ties_x += 1
                ties_y += 1
            elif dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


def average_ranks(values: Sequence[float]) -> List[float]:
    """1-based ranks, tied values sharing the mean of their positions."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    _check(x, y)
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    _check(x, y)
    return pearson(average_ranks(x), average_ranks(y))


def std(values: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (n - 1); None below two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def top_k_regret(proxy: Sequence[float], reference: Sequence[float], k: int) -> float:
    """Reference AP lost by keeping the best of the proxy's top ``k`` instead of the reference's best."""
    _check(proxy, reference)
    chosen = sorted(range(len(proxy)), key=lambda i: (-proxy[i], i))[:k]
    return max(reference) - max(reference[i] for i in chosen)


def top_half(reference: Sequence[float]) -> List[int]:
    """Indices of the better half of the members by reference AP (ceil(n / 2) of them)."""
    order = sorted(range(len(reference)), key=lambda i: (-reference[i], i))
    return sorted(order[:math.ceil(len(reference) / 2)])


def fidelity_summary(proxy_runs: Sequence[Sequence[float]], reference: Sequence[float]) -> Dict[str, Optional[float]]:
    """Every figure of one proxy setting: ``proxy_runs[m]`` are member m's proxy APs (one per seed),
    ``reference[m]`` its reference AP."""
    means = [sum(runs) / len(runs) for runs in proxy_runs]
    half = top_half(reference)
    stds = [s for s in (std(runs) for runs in proxy_runs) if s is not None]
    noise = sum(stds) / len(stds) if stds else None
    spread = std(means)
    return dict(
        kendall_tau=kendall_tau(means, reference),
        spearman_rho=spearman_rho(means, reference),
        kendall_tau_top_half=kendall_tau([means[i] for i in half], [reference[i] for i in half])
        if len(half) >= 2 else None,
        top1_regret=top_k_regret(means, reference, 1),
        top3_regret=top_k_regret(means, reference, 3),
        seed_noise=noise,
        spread=spread,
        noise_to_spread=None if noise is None or not spread else noise / spread,
    )


def _check(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y) or not len(x):
        raise ValueError(f'need two equally long non-empty sequences, got {len(x)} and {len(y)} values')
