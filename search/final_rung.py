"""The final rung: the search's best finalists and best baselines re-trained under a fuller proxy, which then
decides the answer.

Why: a short proxy favours distillers that speed up early learning. On the demo Faster R-CNN pair the search's
answer led FGD by +0.052 under the 40-iteration proxy and trailed it by 0.009 AP at the full schedule
(benchmarks/RESULTS.md). Training every candidate longer would multiply the search's cost. Only the last decision
needs the longer run, as in the top rung of a successive-halving scheme.

Config (optional top-level section of a search config; without it the proxy decides, as before)::

    final_rung = dict(
        proxy=dict(train_images=540, iterations=120, lr_steps=[0.75]),   # overrides of the `proxy` section
        genomes=2,      # the best searched genomes evaluated on every decision seed (mean over them)
        baselines=2)    # the best baselines by their proxy mean

Each finalist is trained on the decision seeds (``search/baselines.py: baseline_seeds``), as a run stored in the
study with user attribute ``rung='final'``. It has no ``key`` and no ``baseline``, so the evolution's replay and
the proxy rankings never see it. A COMPLETE run is never run again (a relaunch resumes the rung).
``search/results.py: decide_answer`` takes the best final-rung mean. The baselines are the incumbents: a searched
genome must have a strictly higher mean to be the answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from distill_core.errors import ConfigError

from . import study as st
from .results import (ATTR_FINALIST, ATTR_FINALIST_KIND, ATTR_RUNG, ATTR_STRATEGY, FINAL_RUNG, STUDY_FINALISTS,
                      StudyResults, baseline_label)
from .storage import ATTR_FORMULA, ATTR_GENOME, ATTR_SEED

SECTION_KEYS = {'proxy', 'genomes', 'baselines'}
STUDY_FINAL_RUNG = 'final_rung'   # study attr: the signature of the final rung its runs were trained under


@dataclass(frozen=True)
class FinalRung:
    proxy: Dict[str, Any]      # overrides of the search's proxy section
    genomes: int
    baselines: int

    @classmethod
    def from_config(cls, search_raw: Mapping[str, Any], source: str) -> Optional['FinalRung']:
        """The checked ``final_rung`` section (None: the search's proxy decides)."""
        section = search_raw.get('final_rung')
        if section is None:
            return None
        if not isinstance(section, Mapping):
            raise ConfigError(f'{source}: final_rung must be a dict(proxy=..., genomes=N, baselines=N)')
        unknown = sorted(set(section) - SECTION_KEYS)
        if unknown:
            known = ', '.join(sorted(SECTION_KEYS))
            raise ConfigError(f'{source}: unknown key final_rung.{unknown[0]} (known: {known})')
        proxy = section.get('proxy')
        if not isinstance(proxy, Mapping) or not proxy:
            raise ConfigError(f'{source}: final_rung.proxy must name what the final rung changes in `proxy` '
                              '(e.g. dict(iterations=120)); an empty one would repeat the search\'s proxy')
        counts = {}
        for name in ('genomes', 'baselines'):
            value = section.get(name, 2)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f'{source}: final_rung.{name} must be an integer >= 0, got {value!r}')
            counts[name] = value
        if counts['genomes'] < 1:
            raise ConfigError(f'{source}: final_rung.genomes must be >= 1 (the rung decides among searched genomes)')
        rung = cls(proxy=dict(proxy), **counts)
        from workers.settings import check_search_config
        check_search_config(rung.search_config(search_raw), f'{source} (final_rung.proxy)')
        return rung

    def search_config(self, search_raw: Mapping[str, Any]) -> Dict[str, Any]:
        """The search config the final rung's runs train with: the search's, its proxy updated."""
        return dict(search_raw, proxy=dict(search_raw['proxy'], **self.proxy))

    def signature(self) -> str:
        """What the stored runs depend on (a relaunch with other settings must not mix its runs with them)."""
        return json.dumps(dict(proxy=self.proxy, genomes=self.genomes, baselines=self.baselines), sort_keys=True,
                          default=str)

    def describe(self) -> str:
        return 'proxy ' + ', '.join(f'{k}={v}' for k, v in sorted(self.proxy.items()))


@dataclass(frozen=True)
class Finalist:
    name: str                          # the genome's key, or the baseline's name
    kind: str                          # 'genome' | 'baseline'
    label: str                         # formula or baseline label
    proxy_value: float                 # its mean over the decision seeds under the search's proxy
    genome: Optional[Dict[str, Any]] = None


def pick_finalists(results: StudyResults, rung: FinalRung, seeds: Sequence[int]) -> List[Finalist]:
    """The ``rung.genomes`` best searched genomes among those evaluated on every decision seed (their mean over
    those seeds; the search's decided winner always included), and the ``rung.baselines`` best baselines."""
    seeds = list(seeds)
    genomes = []
    for ranked in results.ranked():
        by_seed = {results.trial(n).seed: results.trial(n).value for n in ranked.trials}
        if all(seed in by_seed for seed in seeds):
            mean = sum(by_seed[s] for s in seeds) / len(seeds)
            genomes.append(Finalist(ranked.key, 'genome', ranked.formula, mean, ranked.genome))
    winner = results.decided_winner()
    genomes.sort(key=lambda f: (f.name != winner, -f.proxy_value))   # the winner first, then by mean
    chosen = genomes[:rung.genomes]
    baselines = []
    for name, runs in results.baseline_runs().items():
        if all(seed in runs for seed in seeds):
            baselines.append(Finalist(name, 'baseline', baseline_label(name), sum(runs[s] for s in seeds) / len(seeds)))
    baselines.sort(key=lambda f: (-f.proxy_value, f.name))
    return chosen + baselines[:rung.baselines]


def run_final_rung(study, search_raw: Mapping[str, Any], source: str, base_dir: str, seeds: Sequence[int],
                   log=print, resources: Optional[Mapping[str, Any]] = None,
                   ray_address: Optional[str] = None) -> List[Finalist]:
    """Train the missing (finalist, seed) runs of the final rung as Ray tasks; returns the finalists (none
    without a ``final_rung`` section)."""
    from .baselines import baseline_recipe, baseline_specs, has_recipe_run
    from .ray_pool import run_recorded_in_study
    from .results import results_of
    rung = FinalRung.from_config(search_raw, source)
    if rung is None:
        return []
    recorded = study.user_attrs.get(STUDY_FINAL_RUNG)
    if recorded is not None and recorded != rung.signature():
        raise ConfigError(f'study {study.study_name!r} ran its final rung with other settings ({recorded}); its '
                          'runs decide the answer: restore that final_rung section or start a new --study')
    study.set_user_attr(STUDY_FINAL_RUNG, rung.signature())
    finalists = pick_finalists(results_of(study, ''), rung, seeds)
    # only these decide: a finalist of an earlier launch (a baseline before its recipe was honoured) is out
    study.set_user_attr(STUDY_FINALISTS, json.dumps([f.name for f in finalists]))
    rung_cfg = rung.search_config(search_raw)
    baseline_names = [f.name for f in finalists if f.kind == 'baseline']
    specs = baseline_specs(search_raw, source, baseline_names) if baseline_names else {}
    recipes = {name: baseline_recipe(spec) for name, spec in specs.items()}   # each baseline's, read once
    jobs = []
    for finalist in finalists:
        if finalist.kind == 'baseline':
            genome, losses = recipes[finalist.name].genome, recipes[finalist.name].losses
        else:
            genome, losses = json.dumps(finalist.genome), None
        for seed in seeds:
            attrs = {ATTR_RUNG: FINAL_RUNG, ATTR_FINALIST: finalist.name, ATTR_SEED: seed}
            if (has_recipe_run(study, recipes[finalist.name].attr, rung_cfg, **attrs) if finalist.kind == 'baseline'
                    else st.has_complete_run(study, **attrs)):
                continue
            task = dict(kind='proxy', seed=int(seed), search_cfg=rung_cfg, label=f'final rung {finalist.label}',
                        genome=genome, distill_losses=losses)
            jobs.append(((finalist, int(seed)), task))
    if not jobs:
        if finalists:
            log(f'[final rung] {len(finalists)} finalists: already evaluated (seeds {list(seeds)})')
        return finalists
    log(f'[final rung] {len(jobs)} runs under the fuller proxy ({rung.describe()}) decide the answer among: '
        + '; '.join(f'{f.label} ({f.proxy_value:.4f})' for f in finalists))

    def attrs_of(job):
        finalist, seed = job
        attrs = {ATTR_RUNG: FINAL_RUNG, ATTR_FINALIST: finalist.name, ATTR_FINALIST_KIND: finalist.kind,
                 ATTR_SEED: seed, ATTR_FORMULA: finalist.label}
        if finalist.genome is not None:
            attrs[ATTR_GENOME] = json.dumps(finalist.genome, sort_keys=True)
        else:   # a baseline: the recipe it trained (search/baselines.py)
            attrs[ATTR_STRATEGY] = recipes[finalist.name].attr
        return attrs

    def reported(job, result):
        finalist, seed = job
        log(f'[final rung] {finalist.label[:80]} seed {seed}: ' + (
            f'AP {result["value"]:.4f}' if result['ok'] else f'FAILED ({result["reason"][:100]})'))

    run_recorded_in_study(study, jobs, base_dir, resources, attrs_of, reported,
                          'interrupted: the final rung stopped before this run finished', ray_address)
    return finalists
