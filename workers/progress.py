"""One progress line per step of long preparation work (data, backbone pretraining, teacher training).

``ProgressLine`` prints ``[prepare] <label>: 300/1200 it (25 %), 0.42 s/it, ETA 6m18s | loss 0.812`` about every
tenth of the run and once at the end, and ``finish`` prints the result line (accuracy, AP). Everything else a
training framework logs goes to the work folder's log file (see ``workers.full_training.quiet_runner``).
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Optional

Log = Callable[[str], None]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f'{seconds}s'
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f'{minutes}m{seconds:02d}s'
    hours, minutes = divmod(minutes, 60)
    return f'{hours}h{minutes:02d}m'


class ProgressLine:
    """Progress of ``total`` iterations of one step, printed at most ``lines`` times (plus the last)."""

    def __init__(self, label: str, total: int, log: Log = print, lines: int = 10, prefix: str = '[prepare]'):
        self.label, self.total, self.log, self.prefix = label, int(total), log, prefix
        self.every = max(1, self.total // max(1, lines))
        self.start = time.time()
        self.first_done: Optional[int] = None    # rate measured from the first update (skips set-up time)
        self.first_time = self.start

    def update(self, done: int, **values: float) -> None:
        if self.first_done is None:
            self.first_done, self.first_time = done, time.time()
        if done % self.every and done != self.total:
            return
        elapsed = time.time() - self.first_time
        steps = done - self.first_done
        rate = elapsed / steps if steps > 0 else None
        pct = 100.0 * done / max(1, self.total)
        line = f'{self.prefix} {self.label}: {done}/{self.total} it ({pct:.0f} %)'
        if rate is not None:
            line += f', {rate:.2f} s/it, ETA {format_duration(rate * (self.total - done))}'
        shown = ', '.join(f'{key} {value:.3f}' for key, value in values.items() if value is not None)
        self.log(line + (f' | {shown}' if shown else ''))

    def finish(self, result: str) -> None:
        self.log(f'{self.prefix} {self.label}: done in {format_duration(time.time() - self.start)}: {result}')


@contextlib.contextmanager
def quiet_mmengine():
    """mmengine logs one INFO line per parameter on ``init_weights`` (hundreds per model): keep warnings only."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
