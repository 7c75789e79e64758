"""``detkds-search export``: the best (or rank-N) searched distiller as a standalone MMDetection 3.x training config.

The exported file is the student's full training config (data, evaluator, runtime; ``_base_`` resolved, so
the file stands alone) with ``model`` replaced by a ``DetectionDistiller``: the search config's teacher
(config path and checkpoint as given), the student's model dict, the genome as a ``SearchedDistillLoss`` and
its training strategy (``inherit_neck_head``, and ``distill_schedule`` for a warm-up or decay of the
distillation weight, as fractions of the exported schedule); a genome without a strategy (a stage-1 winner)
gets the proxy's (``proxy.inherit_neck_head``). The search config's ``full_training`` section sets the schedule:

    full_training = dict(
        max_iters=600,            # IterBasedTrainLoop length (or max_epochs=N: EpochBasedTrainLoop)
        val_interval=600,         # default: validate once, at the end
        batch_size=8,             # train_dataloader.batch_size
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),   # replaces optim_wrapper.optimizer
        grad_clip=35.0,           # optim_wrapper.clip_grad max_norm; None removes clipping
        param_scheduler=[...],    # replaces the student's; when omitted, the student's schedulers are stretched
                                  # to the new length (begin/end/milestones scaled), same loop kind only
        seed=0,                   # randomness.seed
    )

Every key is optional; an unknown key is a ConfigError naming it. When the search config names a data root
(``data.data_root`` or ``data.generate_shapes.out``), the exported dataloaders and evaluators use it, as the
proxies did. Output is deterministic: the same storage
and search config give a byte-identical file (sorted keys, no timestamps), written atomically.
"""
from __future__ import annotations

import json
import keyword
import os
import os.path as osp
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from distill_core.errors import ConfigError

from . import study as st
from .results import FINAL_RUNG, STUDY_EXPORTED, RankedGenome, StudyResults, open_results_study, results_of

FULL_TRAINING_KEYS = ('max_iters', 'max_epochs', 'val_interval', 'batch_size', 'optimizer', 'grad_clip',
                      'param_scheduler', 'seed')
CUSTOM_IMPORTS = {'imports': ['distill_core.modules'], 'allow_failed_imports': False}
_IDENTIFIER = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_LINE_WIDTH = 110
# top-level variables written first (in this order); the rest follow sorted by name
_LEADING = ('custom_imports', 'default_scope', 'model')


@dataclass(frozen=True)
class Exported:
    path: str
    rank: int
    value: float
    formula: str
    trials: Tuple[int, ...]


# --------------------------------------------------------------------------- full_training section
def check_full_training(section: Optional[Mapping], source: str) -> Dict[str, Any]:
    """Validate the search config's ``full_training`` section; returns it as a dict (empty when absent)."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f'{source}: full_training must be a dict, got {type(section).__name__}')
    import difflib
    for key in section:
        if key not in FULL_TRAINING_KEYS:
            close = difflib.get_close_matches(str(key), FULL_TRAINING_KEYS, n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            raise ConfigError(f'{source}: unknown key full_training.{key}{hint}; accepted: '
                              f'{", ".join(FULL_TRAINING_KEYS)}')
    if 'max_iters' in section and 'max_epochs' in section:
        raise ConfigError(f'{source}: full_training takes max_iters or max_epochs, not both')
    for key in ('max_iters', 'max_epochs', 'val_interval', 'batch_size'):
        value = section.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f'{source}: full_training.{key} must be a positive integer, got {value!r}')
    if 'optimizer' in section and not (isinstance(section['optimizer'], Mapping) and 'type' in section['optimizer']):
        raise ConfigError(f'{source}: full_training.optimizer must be a dict with a `type`')
    clip = section.get('grad_clip')
    if clip is not None and (not isinstance(clip, (int, float)) or clip <= 0):
        raise ConfigError(f'{source}: full_training.grad_clip must be a positive number or None, got {clip!r}')
    schedulers = section.get('param_scheduler')
    if schedulers is not None and not (isinstance(schedulers, (list, tuple))
                                       and all(isinstance(s, Mapping) and 'type' in s for s in schedulers)):
        raise ConfigError(f'{source}: full_training.param_scheduler must be a list of dicts with a `type`')
    seed = section.get('seed')
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ConfigError(f'{source}: full_training.seed must be an integer, got {seed!r}')
    return dict(section)


def _stretch(schedulers: List[Dict], ratio: float, by_epoch: bool) -> List[Dict]:
    """Scale begin/end/milestones of the schedulers counted in the loop's unit (epochs or iterations) by
    ``ratio``; the others (e.g. an iteration warmup in an epoch-based schedule) keep their length."""
    out = []
    for sched in schedulers:
        sched = dict(sched)
        if bool(sched.get('by_epoch', True)) == by_epoch:   # mmengine's default unit is the epoch
            for key in ('begin', 'end', 'T_max'):
                if isinstance(sched.get(key), int):
                    sched[key] = int(round(sched[key] * ratio))
            if isinstance(sched.get('milestones'), (list, tuple)):
                sched['milestones'] = [int(round(m * ratio)) for m in sched['milestones']]
        out.append(sched)
    return out


def apply_full_training(cfg: Dict[str, Any], section: Mapping, source: str) -> None:
    """Set the schedule of the training config ``cfg`` (a plain dict) from a checked ``full_training``."""
    loop = dict(cfg.get('train_cfg') or {})
    by_iter = loop.get('type', 'EpochBasedTrainLoop') == 'IterBasedTrainLoop' or 'max_iters' in loop
    wants_iter = 'max_iters' in section or ('max_epochs' not in section and by_iter)
    old_len = loop.get('max_iters' if by_iter else 'max_epochs')
    new_len = section.get('max_iters', section.get('max_epochs', old_len))
    if new_len is None:
        raise ConfigError(f'{source}: the student config has no train_cfg length; set full_training.max_iters')
    if wants_iter != by_iter and 'param_scheduler' not in section:
        raise ConfigError(f'{source}: full_training changes the training loop kind of the student config '
                          f'({"iteration" if by_iter else "epoch"}-based); give full_training.param_scheduler too')
    loop_type = 'IterBasedTrainLoop' if wants_iter else 'EpochBasedTrainLoop'
    length_key = 'max_iters' if wants_iter else 'max_epochs'
    val_interval = section.get('val_interval')
    if val_interval is None:
        val_interval = loop.get('val_interval', new_len) if new_len == old_len else new_len
    cfg['train_cfg'] = {'type': loop_type, length_key: int(new_len), 'val_interval': int(min(val_interval, new_len))}
    if length_key in cfg and not isinstance(cfg[length_key], Mapping):
        cfg[length_key] = int(new_len)   # the student config's own schedule variable, kept consistent
    if 'param_scheduler' in section:
        cfg['param_scheduler'] = [dict(s) for s in section['param_scheduler']]
    elif cfg.get('param_scheduler') and old_len and new_len != old_len:
        schedulers = cfg['param_scheduler']
        schedulers = [schedulers] if isinstance(schedulers, Mapping) else list(schedulers)
        cfg['param_scheduler'] = _stretch(schedulers, new_len / old_len, by_epoch=not wants_iter)
    wrapper = dict(cfg.get('optim_wrapper') or {'type': 'OptimWrapper'})
    if 'optimizer' in section:
        wrapper['optimizer'] = dict(section['optimizer'])
    if 'grad_clip' in section:
        if section['grad_clip'] is None:
            wrapper.pop('clip_grad', None)
        else:
            wrapper['clip_grad'] = {'max_norm': float(section['grad_clip']), 'norm_type': 2}
    cfg['optim_wrapper'] = wrapper
    if 'batch_size' in section:
        cfg['train_dataloader'] = dict(cfg['train_dataloader'], batch_size=int(section['batch_size']))
    if 'seed' in section:
        cfg['randomness'] = dict(cfg.get('randomness') or {}, seed=int(section['seed']))


# --------------------------------------------------------------------------- building the config
def build_export_config(search_raw: Mapping[str, Any], genome: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """The exported training config as a plain dict of top-level variables."""
    return build_training_config(search_raw, [{'name': 'searched', 'loss': {'type': 'SearchedDistillLoss',
                                                                            'genome': _plain(dict(genome))}}],
                                 source, exported_strategy(search_raw, genome))


def build_training_config(search_raw: Mapping[str, Any], distill_losses: List[Mapping[str, Any]],
                          source: str, strategy=None) -> Dict[str, Any]:
    """The full-training config of the search's pair with ``distill_losses`` (the searched loss, a published
    method's losses, or none), the training ``strategy`` (default: the proxy's: ``proxy.inherit_neck_head``,
    constant distillation weight) and the ``full_training`` schedule."""
    from distill_core.model_config import load_config

    student_spec = (search_raw.get('student') or {}).get('config')
    teacher = dict(search_raw.get('teacher') or {})
    if not isinstance(student_spec, str):
        raise ConfigError(f'{source}: export needs student.config to be a config file (its training schedule, '
                          'data and evaluator become the exported config)')
    if 'config' not in teacher or 'checkpoint' not in teacher:
        raise ConfigError(f'{source}: teacher needs config and checkpoint')
    student_cfg = load_config(student_spec)
    cfg = _plain(student_cfg.to_dict())
    if 'model' not in cfg:
        raise ConfigError(f'student config {student_spec} has no `model` section')
    strategy = strategy or proxy_strategy(search_raw)
    cfg['model'] = {
        'type': 'DetectionDistiller',
        'teacher': {'config': teacher['config'], 'checkpoint': teacher['checkpoint']},
        'student': {'config': cfg['model']},
        'inherit_neck_head': strategy.inherit_neck_head,
        'distill_losses': [_plain(dict(entry)) for entry in distill_losses],
    }
    level_pairing = (search_raw.get('proxy') or {}).get('level_pairing', 'stride')
    if level_pairing != 'stride':   # the FPN level pairs the proxies were trained with (the default is implicit)
        cfg['model']['level_pairing'] = level_pairing
    if not strategy.constant_weight:   # warm-up and decay are fractions of whatever schedule trains it
        cfg['model']['distill_schedule'] = {'warmup': strategy.warmup, 'decay': strategy.decay}
    data = search_raw.get('data') or {}
    data_root = data.get('data_root') or (data.get('generate_shapes') or {}).get('out')
    if data_root:   # the search trained its proxies there (workers.settings.proxy_data_root): so does the export
        from workers.full_training import use_data_root
        use_data_root(cfg, data_root)
        if isinstance(cfg.get('data_root'), str):
            cfg['data_root'] = data_root.rstrip('/') + '/'
    apply_full_training(cfg, check_full_training(search_raw.get('full_training'), source), source)
    cfg['custom_imports'] = dict(CUSTOM_IMPORTS)
    cfg.setdefault('default_scope', 'mmdet')
    # frozen teacher and optional ops (adapters, losses idle on a step without boxes) are unused at times
    cfg['find_unused_parameters'] = True
    cfg.pop('work_dir', None)
    return cfg


def exported_strategy(search_raw: Mapping[str, Any], genome: Mapping[str, Any]):
    """The training strategy the search chose with the genome (stage 2 searches it), else the one its proxies
    were trained with (``proxy.inherit_neck_head``, constant distillation weight)."""
    from distill_core.genome import Genome
    return Genome.parse(genome).strategy or proxy_strategy(search_raw)


def proxy_strategy(search_raw: Mapping[str, Any]):
    """How the search's proxies train a genome that carries no strategy of its own."""
    from distill_core.genome import TrainingStrategy
    return TrainingStrategy(bool((search_raw.get('proxy') or {}).get('inherit_neck_head', False)))


def _plain(value: Any) -> Any:
    """ConfigDict/tuple/... -> dicts, lists, tuples and scalars only (what the writer prints)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f'cannot export a config value of type {type(value).__name__}: {value!r}')


# --------------------------------------------------------------------------- writing Python
def python_literal(value: Any, indent: int = 0, column: Optional[int] = None) -> str:
    """Deterministic Python source of a config value: dicts with sorted keys (``dict(k=v)`` form when every key
    is an identifier), one line when it fits from ``column``, otherwise one item per line at ``indent + 4``."""
    column = indent if column is None else column
    flat = _flat(value)
    if len(flat) + column <= _LINE_WIDTH or not isinstance(value, (dict, list, tuple)) or not value:
        return flat
    inner = indent + 4
    pad = ' ' * inner
    if isinstance(value, dict):
        items = sorted(value.items())
        if all(_IDENTIFIER.match(k) and k not in _KEYWORDS for k, _ in items):
            body = [f'{pad}{k}={python_literal(v, inner, inner + len(k) + 1)}' for k, v in items]
            return 'dict(\n' + ',\n'.join(body) + ',\n' + ' ' * indent + ')'
        body = [f'{pad}{k!r}: {python_literal(v, inner, inner + len(repr(k)) + 2)}' for k, v in items]
        return '{\n' + ',\n'.join(body) + ',\n' + ' ' * indent + '}'
    open_, close = ('[', ']') if isinstance(value, list) else ('(', ')')
    body = [f'{pad}{python_literal(v, inner)}' for v in value]
    return open_ + '\n' + ',\n'.join(body) + ',\n' + ' ' * indent + close


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        items = sorted(value.items())
        if all(_IDENTIFIER.match(k) and k not in _KEYWORDS for k, _ in items):
            return 'dict(' + ', '.join(f'{k}={_flat(v)}' for k, v in items) + ')'
        return '{' + ', '.join(f'{k!r}: {_flat(v)}' for k, v in items) + '}'
    if isinstance(value, list):
        return '[' + ', '.join(_flat(v) for v in value) + ']'
    if isinstance(value, tuple):
        return '(' + ', '.join(_flat(v) for v in value) + (',)' if len(value) == 1 else ')')
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float('inf'), float('-inf')) else \
            f'float({str(value)!r})'
    return repr(value)


_KEYWORDS = frozenset(keyword.kwlist)   # dict(k=v) cannot take these as k


def render_config(cfg: Mapping[str, Any], header: str) -> str:
    names = [n for n in _LEADING if n in cfg] + sorted(n for n in cfg if n not in _LEADING)
    lines = [header.rstrip('\n'), '']
    for name in names:
        lines.append(f'{name} = {python_literal(cfg[name], 0, len(name) + 3)}')
    return '\n'.join(lines) + '\n'


def _comment(text: str) -> str:
    return ' '.join(str(text).split())   # one line: a newline in a formula must not end the comment


def export_header(results: StudyResults, chosen: RankedGenome, search_config: str, out: str,
                  total: int, student_config: str = '', answer: Optional[Mapping[str, Any]] = None) -> str:
    name = osp.splitext(osp.basename(out))[0]
    seeds = {t.number: t.seed for t in results.trials}
    evaluations = ', '.join(f'trial {n} (seed {seeds.get(n)})' for n in chosen.trials)
    lines = [
        f'# DetKDS searched distiller exported by `detkds-search export` (rank {chosen.rank} of {total}).',
        '# Re-export instead of editing: the same storage gives the same file.',
        f'# study:         {_comment(results.study)}',
        f'# storage:       {_comment(results.storage)}',
        f'# search config: {_comment(search_config)}',
        f'# formula:       {_comment(chosen.formula)}',
        f'# proxy AP:      {chosen.value:.4f} (mean of {len(chosen.trials)} COMPLETE evaluation(s): {evaluations})',
        f'# first trial:   {chosen.trials[0]} (stage {chosen.stage}, {chosen.input or "?"}), genome key {chosen.key[:16]}',
    ]
    if answer is not None and answer.get('decided_by') == FINAL_RUNG:
        lines.append(f'# final rung:    AP {answer["value"]:.4f} (mean of {answer["seeds"]} seeds under the fuller proxy of '
                     '`final_rung`), the answer there' + (f', {answer["margin"]:+.4f} over {_comment(answer["bar"]["label"])}'
                                                          if answer.get('bar') else ''))
    lines += [
        '#',
        '# Paths (teacher config and checkpoint, data, evaluator files) are as given in the search config: relative',
        '# ones are relative to the folder the search was launched in (typically the repository root). Run from there:',
        f'# Train (one GPU or CPU):  detkds-search train {out}',
        f'# Train (N GPUs):          torchrun --nproc_per_node=N --no-python detkds-search train {out} --launcher pytorch',
        f'# Student checkpoint:      detkds-search transfer work_dirs/{name}/final.pth {name}_student.pth',
        f'# Plain MMDetection loads: init_detector({_comment(student_config)!r}, {name + "_student.pth"!r})',
    ]
    return '\n'.join(lines) + '\n'


def write_atomic(path: str, text: str) -> None:
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.part')
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def search_config_of(results: StudyResults, override: Optional[str] = None) -> str:
    path = override or results.user_attrs.get(st.STUDY_CONFIG)
    if not path:
        raise ConfigError(f'study {results.study!r} does not record its search config; pass --search-config PATH')
    if not osp.isfile(path):
        raise ConfigError(f'the search config of study {results.study!r} is not at {path} any more (moved or '
                          'deleted); pass --search-config PATH')
    return path


def render_export(results: StudyResults, rank: int, out: str, search_config: Optional[str] = None,
                  searched: bool = False) -> str:
    """The exported file's text for the rank-``rank`` genome of ``results`` (rank 1: the search's answer, which
    may be a published baseline that no searched genome beat; ``searched``: the searched genome regardless)."""
    from distill_core.model_config import load_config
    path = search_config_of(results, search_config)
    raw = {k: v for k, v in load_config(path).to_dict().items() if not k.startswith('_')}
    answer = results.answer() if rank == 1 and not searched else None
    if answer is not None and answer['kind'] == 'baseline':
        return render_baseline_export(results, raw, path, answer, out)
    chosen = _chosen(results, rank, answer)
    cfg = build_export_config(raw, chosen.genome, path)
    header = export_header(results, chosen, path, out, len(results.ranked()), raw['student']['config'], answer)
    text = render_config(cfg, header)
    compile(text, out, 'exec')   # a writer bug must not leave an unloadable file
    return text


def _chosen(results: StudyResults, rank: int, answer: Optional[Mapping[str, Any]]) -> RankedGenome:
    """The rank-``rank`` genome; for rank 1, the answer's genome (a final rung may pick another finalist than
    the proxy's rank 1)."""
    if answer is not None and answer['kind'] == 'genome':
        for ranked in results.ranked():
            if ranked.key == answer['key']:
                return ranked
    return results.at_rank(rank)


def render_baseline_export(results: StudyResults, raw: Mapping[str, Any], path: str, answer: Mapping[str, Any],
                           out: str) -> str:
    """The training config of a published baseline that the search did not beat: its recipe (its own losses and
    training strategy, as its runs trained) and the full-training schedule."""
    from .baselines import baseline_specs, baseline_strategy, distill_losses_of
    spec = baseline_specs(raw, path, [answer['name']])[answer['name']]
    cfg = build_training_config(raw, distill_losses_of(spec) or [], path, baseline_strategy(spec))
    header = '\n'.join([
        f'# The answer of study {_comment(results.study)} is the published baseline {_comment(answer["label"])}: no '
        'searched distiller', f'# beat its {"final-rung" if answer.get("decided_by") == FINAL_RUNG else "proxy"} AP '
        f'{answer["value"]:.4f} (mean of {answer["seeds"]} seeds); its '
        'losses: ' + _comment(str(spec)), f'# storage: {_comment(results.storage)}', f'# search config: {_comment(path)}',
        f'# Train: detkds-search train {out}']) + '\n'
    text = render_config(cfg, header)
    compile(text, out, 'exec')
    return text


def export_study(study: str, out: Optional[str] = None, storage: Optional[str] = None,
                 run_dir: Optional[str] = None, rank: int = 1, search_config: Optional[str] = None,
                 opened: Optional[Tuple[Any, str]] = None, searched: bool = False) -> Exported:
    """Write the rank-``rank`` distiller of ``study`` to ``out`` (default ``<run_dir>/<study>_best.py``; with
    ``searched``, the rank-``rank`` searched genome even where a baseline is the answer,
    ``<run_dir>/<study>_searched.py``).

    ``opened``: (optuna study, masked storage URL) when the caller holds the study already (the controller).
    The path is recorded in the study (user attribute ``exported_config``) for the dashboard and the report.
    """
    run_dir = run_dir or osp.join('runs', study)
    optuna_study, shown = opened or open_results_study(study, storage, run_dir)
    results = results_of(optuna_study, shown)
    out = out or osp.join(run_dir, f'{study}_{"searched" if searched else "best"}.py')
    text = render_export(results, rank, out, search_config, searched)
    write_atomic(out, text)
    if rank == 1 and not searched and results.user_attrs.get(STUDY_EXPORTED) != osp.abspath(out):
        optuna_study.set_user_attr(STUDY_EXPORTED, osp.abspath(out))
    answer = results.answer() if rank == 1 and not searched else None
    if answer is not None and answer['kind'] == 'baseline':
        trials = tuple(t.number for t in results.trials if t.baseline == answer['name'] and t.complete)
        return Exported(path=out, rank=rank, value=answer['value'], formula=answer['label'], trials=trials)
    chosen = _chosen(results, rank, answer)
    return Exported(path=out, rank=rank, value=chosen.value, formula=chosen.formula, trials=chosen.trials)


def exported_json(exported: Exported) -> str:
    return json.dumps(dict(path=exported.path, rank=exported.rank, value=exported.value, formula=exported.formula,
                           trials=list(exported.trials)), indent=2, sort_keys=True)
