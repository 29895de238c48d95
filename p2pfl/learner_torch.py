"""The :class:`TorchLearner`: any ``torch.nn.Module`` behind the :class:`~p2pfl.learner.Learner` protocol.

Apart from :mod:`p2pfl.learner` so that the numpy learner, the protocols and the results a peer imports read
on one page; torch itself is imported only when a :class:`TorchLearner` is built.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from p2pfl.learner import EvalResult, FloatArray, IntArray, Params, TrainResult, _check_same_layout, _softmax

if TYPE_CHECKING:
    import torch

    from p2pfl.privacy.dpsgd import DPSGD


class TorchLearner:
    """Any ``torch.nn.Module`` with a loss, an optimiser factory and in-memory tensors.

    Parameters cross the boundary as float32 numpy arrays named by ``module.state_dict()`` keys (floating
    tensors only; integer buffers such as BatchNorm's counters stay local).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor],
        *,
        optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
        batch_size: int = 16,
        seed: int = 0,
        accuracy: bool = True,
    ) -> None:
        import torch

        self._torch = torch
        self.module = module
        self.loss_fn = loss_fn
        self.train_x, self.train_y = train
        self.val_x, self.val_y = val
        if len(self.train_x) == 0:
            raise ValueError("a learner needs at least one training example")
        self.batch_size = batch_size
        self.accuracy = accuracy
        self.optimizer = (
            optimizer(module.parameters())
            if optimizer is not None
            else torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
        )
        self._gen = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0
        self._lock = threading.Lock()
        self._names = [k for k, v in module.state_dict().items() if v.is_floating_point()]
        #: record-level DP-SGD (p2pfl.privacy.dpsgd_torch), set by a peer with ``[privacy] mode = "record"``
        self.dp: DPSGD | None = None

    def dp_sample_rate(self) -> float:
        """DP-SGD's Poisson sampling rate: ``batch_size`` records expected per step."""
        return min(1.0, self.batch_size / len(self.train_x))

    def enable_dp(self, dp: DPSGD | None) -> None:
        """Train with DP-SGD (per-sample gradients, p2pfl.privacy.dpsgd_torch); ``None``: plain SGD again."""
        from p2pfl.privacy.dpsgd_torch import check_module

        if dp is not None:
            check_module(self.module)
        with self._lock:
            self.dp = dp

    def get_params(self) -> Params:
        with self._lock:
            sd = self.module.state_dict()
            return {k: sd[k].detach().cpu().numpy().astype(np.float32, copy=True) for k in self._names}

    def set_params(self, params: Mapping[str, npt.NDArray[Any]]) -> None:
        with self._lock:
            sd = self.module.state_dict()
            _check_same_layout({k: sd[k].numpy() for k in self._names}, params)
            with self._torch.no_grad():
                for k in self._names:
                    sd[k].copy_(self._torch.from_numpy(np.asarray(params[k], dtype=np.float32)))

    def reset_optimizer(self) -> None:
        with self._lock:
            self.optimizer.state.clear()  # momentum buffers: torch's optimisers rebuild them on the next step

    def train(self, steps: int) -> TrainResult:
        torch = self._torch
        with self._lock:
            if self.dp is not None:
                from p2pfl.privacy.dpsgd_torch import torch_dp_train

                return torch_dp_train(self, steps, self.dp)
            self.module.train()
            total, seen = 0.0, 0
            for _ in range(steps):
                if self._cursor >= len(self._order):
                    self._order = torch.randperm(len(self.train_x), generator=self._gen)
                    self._cursor = 0
                idx = self._order[self._cursor : self._cursor + self.batch_size]
                self._cursor += self.batch_size
                self.optimizer.zero_grad()
                loss = self.loss_fn(self.module(self.train_x[idx]), self.train_y[idx])
                loss.backward()  # type: ignore[no-untyped-call]
                self.optimizer.step()
                total += float(loss.detach())
                seen += len(idx)
            return TrainResult(loss=total / max(steps, 1), samples=seen, steps=steps)

    def predict_proba(
        self, x: npt.NDArray[Any], params: Mapping[str, npt.NDArray[Any]] | None = None
    ) -> FloatArray:
        """Softmax of the module's outputs (a classifier's logits) for ``x``."""
        torch = self._torch
        with self._lock, self._swapped(params):
            self.module.eval()
            with torch.no_grad():
                out = self.module(torch.as_tensor(np.asarray(x), dtype=self.val_x.dtype))
            return _softmax(out.detach().cpu().numpy().astype(np.float64))

    def validation_data(self) -> tuple[npt.NDArray[Any], IntArray]:
        return self.val_x.cpu().numpy(), self.val_y.cpu().numpy().astype(np.int64)

    @contextlib.contextmanager
    def _swapped(self, params: Mapping[str, npt.NDArray[Any]] | None) -> Iterator[None]:
        """Run with ``params`` loaded (if given), restoring the module's own afterwards."""
        torch = self._torch
        if params is None:
            yield
            return
        sd = self.module.state_dict()
        saved = {k: sd[k].clone() for k in self._names}
        with torch.no_grad():
            for k in self._names:
                sd[k].copy_(torch.from_numpy(np.asarray(params[k], dtype=np.float32)))
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in saved.items():
                    sd[k].copy_(v)

    def evaluate(self, params: Mapping[str, npt.NDArray[Any]] | None = None) -> EvalResult:
        torch = self._torch
        with self._lock, self._swapped(params):
            self.module.eval()
            with torch.no_grad():
                out = self.module(self.val_x)
                loss = float(self.loss_fn(out, self.val_y))
                acc = float((out.argmax(dim=1) == self.val_y).float().mean()) if self.accuracy else None
                predicted = None
                if self.accuracy and out.ndim == 2:
                    counts = out.argmax(dim=1).bincount(minlength=out.shape[1])
                    predicted = tuple(int(n) for n in counts.tolist())
            return EvalResult(loss=loss, accuracy=acc, samples=len(self.val_x), predicted=predicted)
