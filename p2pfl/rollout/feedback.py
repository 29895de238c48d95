"""Labelled feedback from the host application: checked on the way in, the newest ``limit`` kept."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pfl.errors import P2PFLError


class FeedbackError(P2PFLError, ValueError):
    """``submit_feedback`` refused its input (wrong shape, non-finite values, labels out of range)."""


class FeedbackBuffer:
    """The newest ``limit`` feedback samples, for evaluating rollout candidates. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._x: npt.NDArray[np.float32] | None = None
        self._y = np.empty(0, np.int64)
        self._lock = threading.Lock()
        #: samples accepted since start (including those since dropped by the limit)
        self.accepted = 0

    def add(self, x: Any, y: Any, *, feature_shape: tuple[int, ...], n_classes: int) -> int:
        """Check and keep ``x`` (n, *feature_shape) and integer labels ``y`` (n,) in ``0..n_classes-1``;
        returns how many samples are kept now. A refusal is a :class:`FeedbackError` saying what is wrong."""
        try:
            xa = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise FeedbackError(f"feedback x is not a numeric array: {exc}") from None
        ya = np.asarray(y)
        want = ("n", *feature_shape)
        if xa.ndim != 1 + len(feature_shape) or tuple(xa.shape[1:]) != feature_shape:
            raise FeedbackError(f"feedback x has shape {xa.shape}, expected {want} (one row per sample)")
        if ya.ndim != 1 or len(ya) != len(xa):
            raise FeedbackError(
                f"feedback y has shape {ya.shape}, expected ({len(xa)},): one label per row of x"
            )
        if len(xa) == 0:
            raise FeedbackError("feedback is empty")
        if not (np.issubdtype(ya.dtype, np.integer) or ya.dtype == np.bool_):
            raise FeedbackError(f"feedback labels must be integer class indices, got dtype {ya.dtype}")
        if not np.isfinite(xa).all():
            raise FeedbackError("feedback x holds non-finite values (NaN or inf)")
        bad = (ya < 0) | (ya >= n_classes)
        if bad.any():
            raise FeedbackError(
                f"feedback label {int(ya[bad][0])} is out of range: the model has {n_classes} classes "
                f"(0..{n_classes - 1})"
            )
        with self._lock:
            self._x = xa if self._x is None else np.concatenate([self._x, xa])[-self.limit :]
            self._y = np.concatenate([self._y, ya.astype(np.int64)])[-self.limit :]
            self.accepted += len(ya)
            if self.limit == 0:
                self._x = self._x[:0]
            return len(self._y)

    def snapshot(self) -> tuple[npt.NDArray[np.float32] | None, npt.NDArray[np.int64]]:
        """The kept samples (x is ``None`` before the first feedback)."""
        with self._lock:
            return self._x, self._y

    def __len__(self) -> int:
        return len(self._y)
