"""A model's tensors <-> one flat float32 vector: the engine's representation of every model."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pfl.wire import arch_digest, model_digest
from p2pfl.wire.tensors import FlatDigest

FloatVec = npt.NDArray[np.float32]
Params = dict[str, npt.NDArray[np.float32]]


@dataclass(frozen=True)
class Layout:
    """Names, shapes and offsets of a model's float32 tensors: named tensors <-> one flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    size: int
    arch: bytes

    @classmethod
    def of(cls, params: Mapping[str, npt.NDArray[Any]]) -> Layout:
        names = tuple(sorted(params, key=lambda n: n.encode("utf-8")))
        shapes = tuple(tuple(int(d) for d in params[n].shape) for n in names)
        offsets, total = [], 0
        for shape in shapes:
            offsets.append(total)
            total += math.prod(shape)
        spec = {n: np.zeros(s, np.float32) for n, s in zip(names, shapes, strict=True)}
        return cls(names, shapes, tuple(offsets), total, arch_digest(spec))

    def flatten(self, params: Mapping[str, npt.NDArray[Any]]) -> FloatVec:
        out = np.empty(self.size, np.float32)
        for name, shape, off in zip(self.names, self.shapes, self.offsets, strict=True):
            arr = params[name]
            if tuple(arr.shape) != shape:
                raise ValueError(f"tensor {name!r} has shape {tuple(arr.shape)}, expected {shape}")
            out[off : off + math.prod(shape)] = np.asarray(arr, dtype=np.float32).reshape(-1)
        return out

    def unflatten(self, vec: FloatVec) -> Params:
        """Named views into ``vec`` (no copy)."""
        return {
            name: vec[off : off + math.prod(shape)].reshape(shape)
            for name, shape, off in zip(self.names, self.shapes, self.offsets, strict=True)
        }

    def matches(self, tensors: Mapping[str, npt.NDArray[Any]]) -> str | None:
        """None if ``tensors`` have exactly this layout's names and shapes (float dtypes), else why not."""
        if set(tensors) != set(self.names):
            return f"tensor names {sorted(tensors)} differ from the model's"
        for name, shape in zip(self.names, self.shapes, strict=True):
            arr = tensors[name]
            if tuple(arr.shape) != shape:
                return f"tensor {name!r} has shape {tuple(arr.shape)}, the model's is {shape}"
            if arr.dtype.kind != "f":
                return f"tensor {name!r} has dtype {arr.dtype}, the model's is float32"
        return None

    def digest(self, vec: FloatVec) -> bytes:
        """``model_digest`` of the tensors ``vec`` holds (the framing built once: :class:`FlatDigest`)."""
        fast = self._flat_digest(vec)
        return fast if fast is not None else model_digest(self.unflatten(vec))

    @functools.cached_property
    def _flat_digest(self) -> FlatDigest:
        return FlatDigest(self.names, self.shapes)
