"""Seeded random streams of a training run: python, numpy, torch CPU and CUDA, captured and swapped as one."""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class RngStreams:
    """A private copy of the global random streams (python, numpy, torch CPU and CUDA), seeded from ``seed``.

    The data pipeline (random flip: numpy) and the training step (mmdet samplers, the ``mask`` op, MGD: torch)
    draw from the global streams. Giving the batch stream and each candidate its own copy, swapped in around its
    work, makes a candidate's randomness independent of how many candidates share its batches: a group of K
    reproduces K single runs with the same seeds.
    """

    def __init__(self, seed: int):
        outer = self._capture()
        seed_everything(seed)
        self.state = self._capture()
        self._restore(outer)

    @staticmethod
    def _capture():
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda

    @staticmethod
    def _restore(state) -> None:
        python, numpy, cpu, cuda = state
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    @contextlib.contextmanager
    def active(self):
        outer = self._capture()
        self._restore(self.state)
        try:
            yield
        finally:
            self.state = self._capture()
            self._restore(outer)
