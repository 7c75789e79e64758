"""``detkds-search launch``: config -> search space -> evolution -> Ray Tune trials -> Optuna storage.

Order of work: validate everything that can be validated (config, space, storage, Ray address, teacher and
data) before the first trial; rebuild the evolution from storage (a relaunch resumes); run trials on Ray Tune
until the evolution or the budget is done; close every trial (a finished launch leaves none RUNNING).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import socket
import time
from typing import Any, Dict, List, Mapping, Optional

from distill_core.errors import ConfigError, DetKDSError

from .config import SearchConfig, load_search_config
from .evolution import Evolution, StagePlan
from . import study as st


class RayError(DetKDSError):
    """The Ray cluster named by --ray-address cannot be reached."""


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600 else \
        f'{seconds // 60}m{seconds % 60:02d}s'


def progress_line(progress: Dict[str, Any], formula: str, elapsed: float, per_trial: Optional[float],
                  concurrency: int) -> str:
    counts = progress['counts']
    streams = ' · '.join(f'{s["input"]} gen {min(s["generation"] + 1, s["generations"])}/{s["generations"]}'
                         + ('' if s['phase'] != 'done' else ' done') for s in progress['streams']
                         if s['stage'] == progress['stage'])
    done = counts['told']
    best = progress.get('best')
    best_text = f'best AP {best["value"]:.4f} ({formula})' if best else 'no fit trial yet'
    remaining = max(counts['max_evaluations'] - done, 0)
    eta = f', ~{_fmt_time(remaining * per_trial / max(concurrency, 1))} left' if per_trial else ''
    return (f'[search] stage {progress["stage"]}: {streams} | trials {done} (complete {counts["complete"]}, '
            f'failed {counts["fail"]}, pruned {counts["pruned"]}) | {best_text} | {_fmt_time(elapsed)} elapsed{eta}')


def expected_new_trials(planned: int, finished: int, max_new: Optional[int]) -> int:
    """Evaluations this launch expects to run (what the teacher cache's 'auto' weighs its build against): what
    the plan leaves after a resumed study's finished trials, within ``--max-trials``' remainder; at least 1."""
    left = max(planned - finished, 0)
    if max_new is not None:
        left = min(left, max_new)
    return max(left, 1)


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any trial, when the Ray head cannot be reached (ray.init would wait much longer)."""
    if address in ('auto', 'local'):
        return
    target = address.split('://', 1)[-1]
    host, _, port = target.rpartition(':')
    if not host or not port.isdigit():
        raise RayError(f'--ray-address must be HOST:PORT (the head node\'s GCS address), got {address!r}')
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RayError(f'cannot reach the Ray head at {address}: {exc.strerror or exc}') from None


class Launch:
    """One run of the controller for one study."""

    def __init__(self, config_path: str, study: Optional[str] = None, run_dir: Optional[str] = None,
                 storage: Optional[str] = None, ray_address: Optional[str] = None, resume: bool = False,
                 max_trials: Optional[int] = None, log=print, verbose: bool = False):
        from .storage import mask_url, open_storage, resolve_storage_url
        self.log = log
        self.verbose = verbose   # preparation: the full training logs on the console, not only progress lines
        self.cfg: SearchConfig = load_search_config(config_path)
        self.study_name = study or osp.splitext(osp.basename(config_path))[0]
        self.run_dir = osp.abspath(run_dir or osp.join('runs', self.study_name))
        self.storage_url = resolve_storage_url(storage, self.run_dir)
        self.storage_shown = mask_url(self.storage_url)
        self.storage = open_storage(storage, self.run_dir)
        exists = st.study_exists(self.storage, self.study_name)
        if resume and not exists:
            raise ConfigError(f'--resume: no study {self.study_name!r} in {self.storage_shown}')
        self.resuming = exists
        self.ray_address = ray_address
        if ray_address:
            check_ray_address(ray_address)
        self.plan = StagePlan.from_config(self.cfg.raw['search'], self.cfg.source)
        self.max_trials = max_trials if max_trials is not None else self.cfg.budget['max_trials']
        from .export import check_full_training   # a bad section must fail now, not after the search
        check_full_training(self.cfg.raw.get('full_training'), self.cfg.source)
        if self.cfg.raw.get('baselines'):
            from .baselines import baseline_specs
            baseline_specs(self.cfg.raw, self.cfg.source)
        from .final_rung import FinalRung
        FinalRung.from_config(self.cfg.raw, self.cfg.source)

    # ------------------------------------------------------------------ study and evolution
    def _open_study(self):
        study = st.open_study(self.storage, self.study_name)
        attrs = study.user_attrs
        plan = json.dumps(self.cfg.raw['search'], sort_keys=True, default=str)
        if self.resuming and attrs.get(st.STUDY_SPACE_HASH) not in (None, self.cfg.space_hash):
            raise ConfigError(f'study {self.study_name!r} was searched with another search space (hash '
                              f'{attrs[st.STUDY_SPACE_HASH]}, now {self.cfg.space_hash}): its genomes and '
                              'replay would not match; restore the space file or start a new --study')
        if self.resuming and attrs.get(st.STUDY_PLAN) not in (None, plan):
            raise ConfigError(f'study {self.study_name!r} was started with another `search` section: resuming '
                              'would not replay the same evolution; restore it or start a new --study')
        if not self.resuming:
            study.set_user_attr(st.STUDY_SPACE_HASH, self.cfg.space_hash)
            study.set_user_attr(st.STUDY_PLAN, plan)
        # the config of the latest launch (same space and plan): export and report read it, so a study resumed
        # from another checkout does not point at a file that may be gone
        study.set_user_attr(st.STUDY_CONFIG, osp.abspath(self.cfg.source))
        study.set_user_attr(st.STUDY_CONCURRENCY, int(self.cfg.resources['max_concurrent']))
        return study

    def _evolution(self, study) -> Evolution:
        from .operators import build_ops
        from .space import Space
        space = self.space = Space.from_file(self.cfg.space_path)
        from distill_core.genome import TrainingStrategy
        proxy_strategy = TrainingStrategy(bool((self.cfg.raw.get('proxy') or {}).get('inherit_neck_head', False)))
        families = self.cfg.families()
        dropped = space.dropped_inputs(families)
        if dropped:   # one line; a stage-1 input forced by the config that the pair cannot serve fails in build_ops
            self.log('[search] ' + '; '.join(dropped.values()))
        stage1, stage2 = build_ops(space, self.plan.stage1_inputs or None, families,
                                   default_strategy=proxy_strategy)
        records = st.replay_records(study)
        for record in records:   # stored genomes must still be valid in today's space
            if record.genome and not record.interrupted:
                from distill_core import Genome
                space.validate(Genome.from_json(record.genome), families)
        return Evolution.replay(records, self.plan, stage1, stage2)

    # ------------------------------------------------------------------ run
    def run(self) -> Dict[str, Any]:
        study = self._open_study()
        closed = st.close_stale_trials(study, 'interrupted: its controller stopped before the trial finished')
        evolution = self._evolution(study)
        counts = evolution.progress()['counts']
        if self.resuming:
            self.log(f'[search] resuming study {self.study_name!r} ({self.storage_shown}): {counts["replayed"]} '
                     f'finished trials replayed, {closed} interrupted trials re-queued')
        else:
            self.log(f'[search] new study {self.study_name!r} in {self.storage_shown}')
        from workers.prepare import prepare_search_inputs
        if not evolution.finished:
            prepare_search_inputs(self.cfg.raw, self.cfg.base_dir, log=self.log, verbose=self.verbose)
            if st.STUDY_STARTED not in study.user_attrs:   # elapsed counts the search, not its preparation
                study.set_user_attr(st.STUDY_STARTED, time.time())
            self._baselines_first(study)
            self._run_trials(study, evolution, float(study.user_attrs[st.STUDY_STARTED]))
        elif self.cfg.raw.get('baselines'):
            # a finished study relaunched: a baseline added since, or whose recipe changed, runs before the
            # answer is decided (the others are COMPLETE and are not run again)
            prepare_search_inputs(self.cfg.raw, self.cfg.base_dir, log=self.log, verbose=self.verbose)
            self._baselines_first(study)
        summary = self._summary(study, evolution)
        if evolution.finished:
            summary.update(self._after_search(study))
        return summary

    def _baselines_first(self, study) -> None:
        """The config's baselines under the same proxy and on the seeds the finalists are decided on, before the
        first exploration trial: the bar the search must beat (never re-run: a COMPLETE run is kept)."""
        if not self.cfg.raw.get('baselines'):
            return
        from .baselines import run_baselines_in_study
        from .results import results_of
        try:
            run_baselines_in_study(study, self.cfg.raw, self.cfg.source, self.cfg.base_dir, log=self.log,
                                   resources=self.cfg.resources, ray_address=self.ray_address)
        except DetKDSError as exc:   # reference lines: the search itself still runs
            self.log(f'[search] baselines stopped: {exc}')
        standing = results_of(study, self.storage_shown).standing()
        if standing:
            bar = standing['bar']
            self.log(f'[search] the bar: {bar["name"]} at proxy AP {bar["value"]:.4f} (mean of {bar["seeds"]} seeds)')

    def _inheritance_unlike(self, answer: Mapping[str, Any], results) -> List[str]:
        """The measured baselines whose recipe differs from the answer's training strategy in inheriting the
        teacher's neck/head. A short proxy favours the recipe that inherits (benchmarks/RESULTS.md, the Faster R-CNN
        pair: PKD's recipe, which trains them from scratch, scores 0.045 under the 40-iteration proxy against the
        inheritance-only control's 0.122, and beats that control after full training, 0.553 vs 0.535), so the
        answer's margin over those says little: the answer says so."""
        from .baselines import baseline_specs, baseline_strategy
        from .export import exported_strategy
        try:
            specs = baseline_specs(self.cfg.raw, self.cfg.source)
        except DetKDSError:   # no baseline could run (its own error was logged before the search)
            return []
        if answer['kind'] == 'baseline':
            inherits = baseline_strategy(specs.get(answer['name'])).inherit_neck_head
        else:
            genome = next(r.genome for r in results.ranked() if r.key == answer['key'])
            inherits = exported_strategy(self.cfg.raw, genome).inherit_neck_head
        measured = results.baseline_runs()
        return sorted(name for name, spec in specs.items()
                      if name in measured and baseline_strategy(spec).inherit_neck_head != inherits)

    def _after_search(self, study) -> Dict[str, Any]:
        """The answer (the search's decided genome, or a baseline with a higher mean over the same seeds), said
        plainly and stored, then its training config."""
        from .baselines import baseline_seeds
        from .export import export_study, proxy_strategy
        from .results import STUDY_ANSWER, decide_answer, describe_answer, results_of
        from distill_core import Genome

        def published_name(genome: Dict[str, Any]):
            return self.space.published_name(Genome.parse(genome), proxy_strategy(self.cfg.raw))

        def variant_of(genome: Dict[str, Any]):
            return self.space.variant_of(Genome.parse(genome))

        seeds = baseline_seeds(self.cfg.raw, self.cfg.source)
        self._final_rung(study, seeds)
        results = results_of(study, self.storage_shown)
        answer = decide_answer(results, seeds, published_name, variant_of)
        if answer is not None:
            answer['inheritance_unlike'] = self._inheritance_unlike(answer, results)
            study.set_user_attr(STUDY_ANSWER, json.dumps(answer, sort_keys=True))
            self.log(f'[search] answer: {describe_answer(answer)}')
        out = osp.join(self.run_dir, f'{self.study_name}_best.py')
        try:
            exported = export_study(self.study_name, out=out, run_dir=self.run_dir,
                                    opened=(study, self.storage_shown))
        except DetKDSError as exc:   # the search itself is done and stored; export can be re-run by hand
            self.log(f'[search] export failed: {exc} (re-run `detkds-search export --study {self.study_name}`)')
            return dict(exported=None, export_error=str(exc), answer=answer)
        self.log(f'[search] exported the answer (proxy AP {exported.value:.4f}) to {exported.path}')
        return dict(exported=exported.path, answer=answer)

    def _final_rung(self, study, seeds) -> None:
        """The configured final rung (search/final_rung.py): the finalists re-trained under a fuller proxy before
        the answer is decided (resumed where a relaunch finds it incomplete)."""
        if self.cfg.raw.get('final_rung') is None:
            return
        from workers.prepare import prepare_search_inputs
        from .final_rung import run_final_rung
        prepare_search_inputs(self.cfg.raw, self.cfg.base_dir, log=self.log, verbose=self.verbose)
        try:
            run_final_rung(study, self.cfg.raw, self.cfg.source, self.cfg.base_dir, seeds, log=self.log,
                           resources=self.cfg.resources, ray_address=self.ray_address)
        except DetKDSError as exc:   # the proxy's decision stands; a relaunch retries the missing runs
            self.log(f'[search] final rung stopped: {exc}')

    def _run_trials(self, study, evolution: Evolution, started_at: float) -> None:
        import ray
        from ray import tune

        from workers.tune_trial import proxy_trainable

        from .searcher import EvolutionSearcher, TrialRetryRecorder, build_scheduler
        book = st.TrialBook(study, self.space)
        finished = sum(1 for r in st.replay_records(study) if not r.interrupted)
        max_new = None if self.max_trials is None else max(self.max_trials - finished, 0)
        hours = self.cfg.budget['max_hours']
        deadline = started_at + hours * 3600 if hours else None
        concurrency = int(self.cfg.resources['max_concurrent'])
        launch_start = time.time()
        last_line = ['']
        wall: list = []

        def on_progress(evo: Evolution, trial_book: st.TrialBook) -> None:
            progress = evo.progress()
            best = evo.best()
            formula = best.genome.formula() if best is not None else ''
            study.set_user_attr(st.STUDY_PROGRESS, json.dumps(progress, default=str))
            wall.append(time.time())
            per_trial = (wall[-1] - launch_start) * concurrency / len(wall) if wall else None
            line = progress_line(progress, formula, time.time() - started_at, per_trial, concurrency)
            key = json.dumps([(s['input'], s['generation'], s['phase']) for s in progress['streams']])
            if key != last_line[0]:   # one line per generation change, not per trial
                last_line[0] = key
                self.log(line)

        proxy = self.cfg.raw['proxy']
        scheduler = build_scheduler(self.cfg.scheduler, int(proxy['iterations']),
                                    int(proxy.get('eval_interval') or proxy['iterations']))
        os.environ.setdefault('TUNE_DISABLE_STRICT_METRIC_CHECKING', '1')  # loss-only reports carry no AP
        os.environ.setdefault('RAY_AIR_NEW_OUTPUT', '0')
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address=self.ray_address, include_dashboard=False, log_to_driver=False,
                     logging_level='ERROR')
        group_size = self._candidates_per_trial(study)
        searcher = EvolutionSearcher(evolution, book, max_new_trials=max_new, deadline=deadline,
                                     on_progress=on_progress, candidates_per_trial=group_size)
        trainable = tune.with_resources(
            tune.with_parameters(proxy_trainable, search_cfg=self.cfg.raw, base_dir=self.cfg.base_dir,
                                 # one teacher feature cache per search, shared by its trials (where it pays)
                                 teacher_cache_dir=osp.join(self.run_dir, 'teacher_cache'),
                                 expected_trials=expected_new_trials(
                                     evolution.max_evaluations(), finished, max_new)),
            {'cpu': self.cfg.resources['cpus_per_trial'], 'gpu': self.cfg.resources['gpus_per_trial']})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                        max_concurrent_trials=concurrency,
                                        # a trial builds everything it uses and seeds itself, so its process
                                        # can serve the next trial: saves ~2 s of actor start per trial
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=self.study_name, storage_path=osp.join(self.run_dir, 'ray'),
                                      verbose=0, failure_config=tune.FailureConfig(max_failures=2),
                                      callbacks=[TrialRetryRecorder(searcher)],
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        interrupted = False
        try:
            tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if book.open:
                interrupted = True
                book.interrupt_all('interrupted: the launch stopped before the trial finished')
            if started_ray:
                ray.shutdown()
        if interrupted:
            self.log(f'[search] stopped; the study is resumable: relaunch with --study {self.study_name}')

    def _candidates_per_trial(self, study) -> int:
        """``resources.candidates_per_trial`` resolved for this launch (logged and kept in the study): 'auto' on
        GPU trials asks a probe running as a Ray task with the trial's resources, so it measures the machines the
        trials will run on."""
        from .config import resolve_candidates_per_trial
        resources = self.cfg.resources
        size = resolve_candidates_per_trial(resources, self.cfg.scheduler, self.cfg.source, probe=self._probe)
        self.log(f'[search] {size} candidates per trial (shared teacher)' if size > 1 else
                 '[search] 1 candidate per trial')
        study.set_user_attr(st.STUDY_CANDIDATES_PER_TRIAL, size)
        return size

    def _probe(self) -> int:
        import ray

        from workers.group_size import first_published_genome, probe_group_size
        resources = self.cfg.resources
        genome = first_published_genome(self.space, self.cfg.families())
        probe = ray.remote(num_cpus=resources['cpus_per_trial'], num_gpus=resources['gpus_per_trial'])(
            probe_group_size)
        try:
            return ray.get(probe.remote(self.cfg.raw, self.cfg.base_dir, genome=genome and genome.to_json(),
                                        gpu_fraction=float(resources['gpus_per_trial'])))
        except Exception as exc:   # a failed probe costs the sharing only, never the search
            cause = getattr(exc, 'cause', None) or exc   # a RayTaskError wraps the probe's own exception
            self.log(f'[search] the group-size probe failed ({type(cause).__name__}: {str(cause)[:300]}): 1 '
                     'candidate per trial')
            return 1

    def _summary(self, study, evolution: Evolution) -> Dict[str, Any]:
        from optuna.trial import TrialState
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        best = evolution.best()
        summary = dict(study=self.study_name, storage=self.storage_shown, finished=evolution.finished,
                       trials=counts, best=None)
        if best is not None:
            summary['best'] = dict(value=best.value, formula=best.genome.formula(), key=best.key,
                                   evaluations=best.evaluations, genome=json.loads(best.genome.to_json()))
        self.log(f'[search] {"finished" if evolution.finished else "stopped"}: '
                 + ', '.join(f'{v} {k}' for k, v in counts.items() if v)
                 + (f' | best AP {best.value:.4f}: {best.genome.formula()}' if best else ''))
        return summary


def launch(config_path: str, **kwargs) -> Dict[str, Any]:
    return Launch(config_path, **kwargs).run()
