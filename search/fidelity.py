"""``detkds-search fidelity``: does the proxy rank distillers the way full training does?

A panel of distillers for the search config's pair (the student alone, the config's baselines, the published
DetKDS formulations of the family, random genomes of the space: ``--panel N`` members in all; each baseline with
its published recipe, losses and training strategy, as the search's baselines train it) is trained under
each proxy setting with several seeds and once under the reference schedule (the config's ``full_training``, or
a longer proxy); each member also gets a training-free score (gradient alignment, workers/standalone_runs.py).
The report per setting: Kendall tau and Spearman rho between the proxy's mean fitness and the reference AP, tau
on the better half of the panel by reference AP (where a search decides), top-1/top-3 regret, seed noise (mean
std over seeds) against the spread between members, and the cost; the cheapest setting whose tau clears
``--threshold`` is named.

Every run is a trial of the fidelity study (user attribute ``fidelity`` = kind/member/setting/seed), run as a
Ray task on the local machine or the cluster at ``--ray-address``; the controller alone writes the storage.
Relaunching resumes: finished runs are never re-run, runs a killed controller left RUNNING are closed as
interrupted and re-run. A failed run (a rejected candidate, a crash) counts as AP 0, as the search ranks it.
The result goes to ``<run dir>/fidelity.json`` and ``fidelity.md`` and into the study (``status``, ``report``).
"""
from __future__ import annotations

import itertools
import json
import os
import os.path as osp
import random
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from optuna.trial import TrialState

from distill_core.errors import ConfigError

from . import study as st
from .fidelity_stats import fidelity_summary, kendall_tau, spearman_rho
from .results import ATTR_STRATEGY
from .storage import ATTR_SEED, ATTR_WALL_TIME

ATTR_FIDELITY = 'fidelity'                 # trial: json {kind, member, setting, seed}
STUDY_FIDELITY_PANEL = 'fidelity_panel'    # study: the members (so that a resumed run keeps its panel)
STUDY_FIDELITY_RESULT = 'fidelity_result'  # study: the summary written at the end
STUDY_FIDELITY_PLAN = 'fidelity_plan'      # study: how many runs this launch plans (for status while it runs)
DEFAULT_PANEL = 12
DEFAULT_SEEDS = 2
DEFAULT_THRESHOLD = 0.6
ZERO_COST = 'gradient_alignment'
BASE_SETTING = 'config proxy'


# ---------------------------------------------------------------------------------------------- panel
@dataclass(frozen=True)
class Member:
    name: str
    kind: str                         # 'baseline' | 'published' | 'random'
    genome: Optional[str] = None      # Genome JSON (published, random)
    baseline: Optional[str] = None    # baseline name (search/baselines.py)
    formula: str = ''


def build_panel(cfg, size: int, seed: int = 0) -> List[Member]:
    """The student alone and the config's baselines, the family's published DetKDS genomes, then random genomes
    of the config's stage-1 inputs (distinct canonical forms) up to ``size`` members."""
    from .baselines import baseline_specs
    from .results import baseline_label
    from .space import Space
    if size < 2:
        raise ConfigError(f'--panel must be at least 2, got {size}')
    family, families = cfg.family(), cfg.families()
    members: List[Member] = []
    specs = baseline_specs(cfg.raw, cfg.source) if cfg.raw.get('baselines') is not None else {'none': None}
    for name in sorted(specs, key=lambda n: n != 'none'):   # the student alone first
        members.append(Member(name=name, kind='baseline', baseline=name, formula=baseline_label(name)))
    space = Space.from_file(cfg.space_path)
    seen = set()
    for pair, genome in sorted(space.published.items()):
        if family is None or not pair.startswith(f'{family}_') or \
                any(space.input_problem(t.input, families) for t in genome.active_terms):
            continue   # another family's genome, or an input the (heterogeneous) pair cannot serve
        space.validate(genome, families)
        seen.add(genome.key())
        members.append(Member(name=f'detkds_{pair}', kind='published', genome=genome.to_json(),
                              formula=genome.formula()))
    inputs = tuple(cfg.raw['search'].get('stage1_inputs') or space.inputs)
    rng = random.Random(seed)
    attempts = 0
    while len(members) < size:
        attempts += 1
        if attempts > 1000 * size:
            raise ConfigError(f'{cfg.source}: cannot draw {size} distinct panel members from the space')
        genome = space.sample_genome(rng, inputs, stage=1, family=families)
        if genome.key() in seen:
            continue
        seen.add(genome.key())
        members.append(Member(name=f'random_{len(members):02d}', kind='random', genome=genome.to_json(),
                              formula=genome.formula()))
    return members[:size]


# ---------------------------------------------------------------------------------------------- settings
def parse_proxy_overrides(tokens: Optional[Sequence[str]], search_raw: Mapping[str, Any],
                          source: str) -> List[Dict[str, Any]]:
    """``['iterations=20,40', 'train_images=120,240']`` -> every combination as a dict of proxy overrides,
    each checked against the proxy section's rules (a bad key or value is a ConfigError before any training).
    No tokens: one setting, the config's own proxy."""
    from workers.settings import PROXY_KEYS, check_search_config
    if not tokens:
        return [{}]
    axes: List[Tuple[str, List[Any]]] = []
    for token in tokens:
        key, sep, values = token.partition('=')
        key = key.strip()
        if not sep or not values:
            raise ConfigError(f'--proxy expects KEY=VALUE[,VALUE...], got {token!r}')
        if key not in PROXY_KEYS:
            raise ConfigError(f'--proxy: unknown proxy key {key!r} (keys: {", ".join(sorted(PROXY_KEYS))})')
        if key in (k for k, _ in axes):
            raise ConfigError(f'--proxy: key {key!r} given twice')
        axes.append((key, [_parse_value(v) for v in values.split(',')]))
    combos = [dict(zip([k for k, _ in axes], values)) for values in itertools.product(*[v for _, v in axes])]
    for overrides in combos:
        check_search_config(proxy_raw_with(overrides, search_raw), f'{source}: --proxy {setting_label(overrides)}')
    return combos


def _parse_value(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {'True': True, 'False': False, 'None': None}.get(text, text)


def setting_label(overrides: Mapping[str, Any]) -> str:
    return ' '.join(f'{k}={json.dumps(v)}' for k, v in sorted(overrides.items())) or BASE_SETTING


def proxy_raw_with(overrides: Mapping[str, Any], search_raw: Mapping[str, Any]) -> Dict[str, Any]:
    """The search config (raw dict) with the proxy section's keys replaced."""
    raw = dict(search_raw)
    raw['proxy'] = dict(search_raw['proxy'], **dict(overrides))
    return raw


def parse_reference(value: str) -> Optional[int]:
    """``full`` -> None (the config's full_training); an integer -> a proxy of that many iterations."""
    if value == 'full':
        return None
    try:
        iterations = int(value)
    except ValueError:
        raise ConfigError(f'--reference must be "full" or a number of iterations, got {value!r}') from None
    if iterations < 1:
        raise ConfigError(f'--reference iterations must be positive, got {iterations}')
    return iterations


# ---------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Run:
    kind: str          # 'proxy' | 'reference' | ZERO_COST
    member: str
    setting: str       # the proxy setting's label, the reference's label, or ZERO_COST
    seed: int

    @property
    def key(self) -> Tuple[str, str, str, int]:
        return self.kind, self.member, self.setting, self.seed


def _run_of(trial) -> Optional[Run]:
    raw = trial.user_attrs.get(ATTR_FIDELITY)
    return Run(**json.loads(raw)) if raw else None


class Fidelity:
    """One ``detkds-search fidelity`` run over a study (new or resumed)."""

    def __init__(self, config_path: str, study: Optional[str] = None, run_dir: Optional[str] = None,
                 storage: Optional[str] = None, ray_address: Optional[str] = None, panel: int = DEFAULT_PANEL,
                 seeds: int = DEFAULT_SEEDS, reference: str = 'full', proxy: Optional[Sequence[str]] = None,
                 threshold: float = DEFAULT_THRESHOLD, zero_cost_batches: int = 4, log: Callable[[str], None] = print,
                 verbose: bool = False):
        from .config import load_search_config
        from .controller import check_ray_address
        from .storage import mask_url, open_storage, resolve_storage_url
        self.log, self.verbose = log, verbose
        self.cfg = load_search_config(config_path)
        if seeds < 1:
            raise ConfigError(f'--seeds must be at least 1, got {seeds}')
        if not 0 < threshold <= 1:
            raise ConfigError(f'--threshold must be in (0, 1], got {threshold}')
        self.seeds = list(range(seeds))
        self.threshold = threshold
        self.zero_cost_batches = zero_cost_batches
        self._recipes: Dict[str, Any] = {}            # member name -> baselines.BaselineRecipe
        self.reference_iterations = parse_reference(reference)
        self.reference_label = 'full_training' if self.reference_iterations is None else \
            f'proxy iterations={self.reference_iterations}'
        if self.reference_iterations is None:
            from .export import check_full_training
            check_full_training(self.cfg.raw.get('full_training'), self.cfg.source)
        self.settings = parse_proxy_overrides(proxy, self.cfg.raw, self.cfg.source)
        self.ray_address = ray_address
        if ray_address:
            check_ray_address(ray_address)
        if panel < 2:
            raise ConfigError(f'--panel must be at least 2, got {panel}')
        self.panel_size = panel
        # only now, with every argument checked, may the run folder and its storage be created
        self.study_name = study or f'fidelity_{osp.splitext(osp.basename(config_path))[0]}'
        self.run_dir = osp.abspath(run_dir or osp.join('runs', self.study_name))
        self.storage_url = resolve_storage_url(storage, self.run_dir)
        self.storage_shown = mask_url(self.storage_url)
        self.storage = open_storage(storage, self.run_dir)

    # ------------------------------------------------------------------ plan
    def _panel(self, study) -> List[Member]:
        stored = study.user_attrs.get(STUDY_FIDELITY_PANEL)
        if stored:
            members = [Member(**m) for m in json.loads(stored)]
            if len(members) != self.panel_size:
                raise ConfigError(f'study {self.study_name!r} measured a panel of {len(members)} members; '
                                  f'resume it with --panel {len(members)} or start a new --study')
            return members
        members = build_panel(self.cfg, self.panel_size, seed=int(self.cfg.raw['search'].get('seed', 0)))
        study.set_user_attr(STUDY_FIDELITY_PANEL, json.dumps([asdict(m) for m in members]))
        return members

    def _plan(self, members: Sequence[Member]) -> List[Run]:
        runs = [Run(ZERO_COST, m.name, ZERO_COST, 0) for m in members]
        runs += [Run('reference', m.name, self.reference_label, 0) for m in members]
        runs += [Run('proxy', m.name, setting_label(s), seed) for s in self.settings for seed in self.seeds
                 for m in members]
        return runs

    def _recipe(self, member: Member):
        """A baseline member's published recipe (``baselines.BaselineRecipe``, its method config read once per
        member), else None."""
        from .baselines import baseline_recipe, baseline_specs
        if member.baseline is None:
            return None
        if member.name not in self._recipes:
            spec = baseline_specs(self.cfg.raw, self.cfg.source, [member.baseline])[member.baseline]
            self._recipes[member.name] = baseline_recipe(spec)
        return self._recipes[member.name]

    def _task(self, run: Run, member: Member) -> Dict[str, Any]:
        recipe = self._recipe(member)
        losses = recipe.losses if recipe else None
        # a baseline trains its recipe (its losses beside a term-less genome carrying its strategy), as the
        # search's baselines do: the panel then ranks what the search compares
        genome = recipe.genome if recipe else member.genome
        task = dict(kind=run.kind, seed=run.seed, genome=genome, distill_losses=losses,
                    label=f'{member.name} ({run.setting})', search_cfg=self.cfg.raw)
        if run.kind == 'proxy':
            overrides = next(s for s in self.settings if setting_label(s) == run.setting)
            task['search_cfg'] = proxy_raw_with(overrides, self.cfg.raw)
            task['teacher_cache_dir'] = osp.join(self.run_dir, 'teacher_cache')
            task['expected_trials'] = len(self.seeds) * self.panel_size
        elif run.kind == 'reference' and self.reference_iterations is not None:
            task['search_cfg'] = proxy_raw_with(dict(iterations=self.reference_iterations), self.cfg.raw)
        elif run.kind == 'reference':
            task['config'], task['work_dir'] = self._write_reference_config(member, recipe)
        else:
            task['batches'] = self.zero_cost_batches
        return task

    def _write_reference_config(self, member: Member, recipe) -> Tuple[str, str]:
        from .export import _comment, build_training_config, render_config, write_atomic
        entries = (recipe.losses or []) if recipe else []
        if member.genome is not None:
            entries = [{'name': 'searched', 'loss': {'type': 'SearchedDistillLoss',
                                                     'genome': json.loads(member.genome)}}]
        cfg = build_training_config(self.cfg.raw, entries, self.cfg.source, recipe.strategy if recipe else None)
        work_dir = osp.join(self.run_dir, 'reference', member.name)
        path = osp.join(work_dir, 'config.py')
        write_atomic(path, render_config(cfg, f'# fidelity reference of {member.name}: {_comment(member.formula)}\n'))
        return path, work_dir

    # ------------------------------------------------------------------ run
    def run(self) -> Dict[str, Any]:
        from workers.prepare import prepare_search_inputs
        study = st.open_study(self.storage, self.study_name)
        closed = st.close_stale_trials(study, 'interrupted: the fidelity run stopped before this run finished')
        members = self._panel(study)
        by_name = {m.name: m for m in members}
        plan = self._plan(members)
        done = self._finished(study, by_name)
        todo = [r for r in plan if r.key not in done]
        study.set_user_attr(STUDY_FIDELITY_PLAN, json.dumps(dict(runs=len(plan), reference=self.reference_label,
                                                                 settings=[setting_label(s) for s in self.settings],
                                                                 seeds=self.seeds)))
        self.log(f'[fidelity] study {self.study_name!r} ({self.storage_shown}): {len(members)} members, '
                 f'{len(self.settings)} proxy setting(s) x {len(self.seeds)} seed(s), reference {self.reference_label}; '
                 f'{len(plan) - len(todo)} of {len(plan)} runs done' + (f', {closed} interrupted re-queued'
                                                                          if closed else ''))
        if todo:
            prepare_search_inputs(self.cfg.raw, self.cfg.base_dir, log=self.log, verbose=self.verbose)
            self._execute(study, todo, by_name)
        summary = self.summarise(study, members)
        self._write(study, summary)
        return summary

    def _finished(self, study, by_name: Mapping[str, Member]) -> Dict[Tuple, Any]:
        out = {}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            run = _run_of(trial)
            if run is not None and _counts_as_done(trial) and self._trained_recipe(trial, by_name.get(run.member)):
                out[run.key] = trial
        return out

    def _trained_recipe(self, trial, member: Optional[Member]) -> bool:
        """Whether a baseline member's run trained its recipe (runs before recipes were honoured trained the
        proxy's strategy and record none: they count where that is the recipe's); True for other members."""
        from .baselines import recorded_recipe
        recipe = self._recipe(member) if member is not None else None
        return recipe is None or recorded_recipe(trial.user_attrs.get(ATTR_STRATEGY), self.cfg.raw) == recipe.attr

    def _execute(self, study, todo: List[Run], by_name: Mapping[str, Member]) -> None:
        from .ray_pool import run_recorded_in_study
        counter = iter(range(1, len(todo) + 1))

        def attrs_of(run: Run) -> Dict[str, Any]:
            recipe = self._recipe(by_name[run.member])
            attrs = {ATTR_FIDELITY: json.dumps(asdict(run)), ATTR_SEED: run.seed,
                     st.ATTR_FORMULA: by_name[run.member].formula}
            if recipe is not None:   # what a resumed run checks it against (_trained_recipe)
                attrs[ATTR_STRATEGY] = recipe.attr
            return attrs

        def reported(run: Run, result: Dict[str, Any]) -> None:
            what = 'score' if run.kind == ZERO_COST else 'AP'
            shown = f'{result["value"]:.4f}' if result['ok'] else f'FAILED ({result["reason"][:80]})'
            self.log(f'[fidelity] {next(counter)}/{len(todo)} {run.kind} {run.member} [{run.setting}] seed '
                     f'{run.seed}: {what} {shown} in {result["seconds"]:.0f} s')

        try:
            run_recorded_in_study(study, [(run, self._task(run, by_name[run.member])) for run in todo],
                                  self.cfg.base_dir, self.cfg.resources, attrs_of, reported,
                                  'interrupted: the fidelity run stopped', self.ray_address)
        except KeyboardInterrupt:
            self.log(f'[fidelity] interrupted; relaunch the same command to resume (study {self.study_name!r})')
            raise

    # ------------------------------------------------------------------ results
    def summarise(self, study, members: Sequence[Member]) -> Dict[str, Any]:
        done = self._finished(study, {m.name: m for m in members})

        def value(run: Run) -> Optional[float]:
            trial = done.get(run.key)
            if trial is None:
                return None
            return float(trial.value) if trial.state == TrialState.COMPLETE else 0.0

        def seconds(run: Run) -> float:
            trial = done.get(run.key)
            return float(trial.user_attrs.get(ATTR_WALL_TIME, 0.0)) if trial is not None else 0.0

        panel = []
        for m in members:
            ref_run = Run('reference', m.name, self.reference_label, 0)
            zero_run = Run(ZERO_COST, m.name, ZERO_COST, 0)
            row = dict(name=m.name, kind=m.kind, formula=m.formula, reference_ap=value(ref_run),
                       reference_seconds=round(seconds(ref_run), 1), reference_failed=_failed(done, ref_run),
                       gradient_alignment=value(zero_run), proxy={})
            for s in self.settings:
                runs = [Run('proxy', m.name, setting_label(s), seed) for seed in self.seeds]
                aps = [value(r) for r in runs]
                row['proxy'][setting_label(s)] = dict(
                    aps=aps, mean=None if None in aps else sum(aps) / len(aps),
                    failed=sum(_failed(done, r) for r in runs), seconds=round(sum(seconds(r) for r in runs), 1))
            panel.append(row)
        complete = [row for row in panel if row['reference_ap'] is not None]
        settings = {}
        for s in self.settings:
            label = setting_label(s)
            rows = [row for row in complete if row['proxy'][label]['mean'] is not None]
            entry: Dict[str, Any] = dict(overrides=s, members=len(rows),
                                         seconds=round(sum(row['proxy'][label]['seconds'] for row in panel), 1))
            runs = sum(len(self.seeds) for _ in panel)
            entry['seconds_per_run'] = round(entry['seconds'] / runs, 2) if runs else None
            if len(rows) >= 2:
                entry.update(fidelity_summary([row['proxy'][label]['aps'] for row in rows],
                                              [row['reference_ap'] for row in rows]))
            settings[label] = entry
        zero_rows = [row for row in complete if row['gradient_alignment'] is not None]
        zero = dict(seconds=round(sum(seconds(Run(ZERO_COST, m.name, ZERO_COST, 0)) for m in members), 1),
                    batches=self.zero_cost_batches)
        if len(zero_rows) >= 2:
            scores = [row['gradient_alignment'] for row in zero_rows]
            refs = [row['reference_ap'] for row in zero_rows]
            zero.update(kendall_tau=kendall_tau(scores, refs), spearman_rho=spearman_rho(scores, refs))
        chosen = choose_setting(settings, self.threshold)
        return dict(config=self.cfg.source, study=self.study_name, reference=self.reference_label,
                    reference_seconds=round(sum(row['reference_seconds'] for row in panel), 1),
                    seeds=self.seeds, threshold=self.threshold, members=len(members),
                    complete_members=len(complete), settings=settings, zero_cost={ZERO_COST: zero},
                    chosen=chosen, panel=panel)

    def _write(self, study, summary: Dict[str, Any]) -> None:
        from .export import write_atomic
        os.makedirs(self.run_dir, exist_ok=True)
        write_atomic(osp.join(self.run_dir, 'fidelity.json'), json.dumps(summary, indent=2, sort_keys=True) + '\n')
        table = format_fidelity(summary)
        write_atomic(osp.join(self.run_dir, 'fidelity.md'), table + '\n')
        study.set_user_attr(STUDY_FIDELITY_RESULT, json.dumps(summary, sort_keys=True))
        self.log(table)
        self.log(f'[fidelity] wrote {osp.join(self.run_dir, "fidelity.json")} and fidelity.md')


def _counts_as_done(trial) -> bool:
    """A failure counts as a result only when the candidate itself was rejected (a degenerate loss: AP 0, as the
    search ranks it); a crash or an interruption is run again on resume."""
    return trial.state == TrialState.COMPLETE or bool(trial.user_attrs.get(st.ATTR_REJECTED))


def _failed(done: Mapping, run: Run) -> bool:
    trial = done.get(run.key)
    return trial is not None and trial.state == TrialState.FAIL


def choose_setting(settings: Mapping[str, Mapping[str, Any]], threshold: float) -> Optional[str]:
    """The cheapest setting (seconds per run) whose Kendall tau reaches ``threshold``, or None."""
    passing = [(entry['seconds_per_run'] or 0.0, label) for label, entry in settings.items()
               if entry.get('kendall_tau') is not None and entry['kendall_tau'] >= threshold]
    return min(passing)[1] if passing else None


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def format_fidelity(summary: Mapping[str, Any]) -> str:
    """The result as Markdown tables: one row per proxy setting (and the training-free score), then the panel."""
    lines = [f'Proxy fidelity of {summary["config"]} (study {summary["study"]}): {summary["complete_members"]} of '
             f'{summary["members"]} members with a reference ({summary["reference"]}, '
             f'{summary["reference_seconds"]:.0f} s in all), seeds {summary["seeds"]}', '',
             '| proxy setting | s/run | Kendall tau | Spearman rho | tau top half | top-1 regret | top-3 regret '
             '| seed noise | spread | noise/spread |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for label, e in summary['settings'].items():
        lines.append(f'| {label} | {_fmt(e.get("seconds_per_run"), 1)} | {_fmt(e.get("kendall_tau"))} | '
                     f'{_fmt(e.get("spearman_rho"))} | {_fmt(e.get("kendall_tau_top_half"))} | '
                     f'{_fmt(e.get("top1_regret"), 4)} | {_fmt(e.get("top3_regret"), 4)} | '
                     f'{_fmt(e.get("seed_noise"), 4)} | {_fmt(e.get("spread"), 4)} | {_fmt(e.get("noise_to_spread"), 2)} |')
    for label, e in summary['zero_cost'].items():
        per = e['seconds'] / max(1, summary['members'])
        lines.append(f'| training-free: {label} ({e["batches"]} batches) | {per:.1f} | {_fmt(e.get("kendall_tau"))} | '
                     f'{_fmt(e.get("spearman_rho"))} | - | - | - | - | - | - |')
    chosen = summary.get('chosen')
    lines += ['', f'Cheapest setting with Kendall tau >= {summary["threshold"]}: '
                  + (chosen if chosen else 'none reaches it'), '']
    labels = list(summary['settings'])
    lines.append('| member | kind | reference AP | ' + ' | '.join(f'proxy {l}' for l in labels) + ' | gradient alignment |')
    lines.append('|---|---|---|' + '---|' * len(labels) + '---|')
    for row in summary['panel']:
        cells = []
        for label in labels:
            p = row['proxy'][label]
            aps = ', '.join(_fmt(a, 4) for a in p['aps'])
            cells.append(f'{_fmt(p["mean"], 4)} ({aps})')
        lines.append(f'| {row["name"]}: {row["formula"]} | {row["kind"]} | {_fmt(row["reference_ap"], 4)} | '
                     + ' | '.join(cells) + f' | {_fmt(row["gradient_alignment"], 4)} |')
    return '\n'.join(lines)


def run_fidelity(config_path: str, **kwargs) -> Dict[str, Any]:
    return Fidelity(config_path, **kwargs).run()


def fidelity_status(study) -> Optional[Dict[str, Any]]:
    """Where a fidelity study stands (for ``status``): runs done of those planned, and the last summary's
    figures per setting; None for a study that is not a fidelity study."""
    attrs = study.user_attrs
    if STUDY_FIDELITY_PLAN not in attrs:
        return None
    plan = json.loads(attrs[STUDY_FIDELITY_PLAN])
    done = len({_run_of(t).key for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ATTR_FIDELITY)
                and _counts_as_done(t)})
    result = json.loads(attrs[STUDY_FIDELITY_RESULT]) if STUDY_FIDELITY_RESULT in attrs else None
    return dict(plan, done=done, result=result)


def format_fidelity_status(status: Mapping[str, Any]) -> List[str]:
    lines = [f'  fidelity: {status["done"]}/{status["runs"]} runs done (reference {status["reference"]}, seeds '
             f'{status["seeds"]})']
    result = status.get('result')
    if result:
        for label, e in result['settings'].items():
            lines.append(f'    {label}: Kendall tau {_fmt(e.get("kendall_tau"))}, top half {_fmt(e.get("kendall_tau_top_half"))}, '
                         f'top-1 regret {_fmt(e.get("top1_regret"), 4)}, noise/spread {_fmt(e.get("noise_to_spread"), 2)}, '
                         f'{_fmt(e.get("seconds_per_run"), 1)} s/run')
        for label, e in result['zero_cost'].items():
            lines.append(f'    training-free {label}: Kendall tau {_fmt(e.get("kendall_tau"))}')
        lines.append(f'    cheapest setting with tau >= {result["threshold"]}: {result.get("chosen") or "none"}')
    return lines

