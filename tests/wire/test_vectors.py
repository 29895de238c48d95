"""Replay the wire conformance vectors (docs/vectors/*.json) against the reference implementation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from p2pfl.wire import iter_reasons

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "vectors"
KINDS = ("envelopes", "payloads", "records")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vector_generator", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _load(kind: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{kind}.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


CASES = [(kind, vec) for kind in KINDS for vec in _load(kind)["vectors"]]


@pytest.mark.parametrize(("kind", "vector"), CASES, ids=[f"{k}/{v['name']}" for k, v in CASES])
def test_vector_outcome_is_reproduced_exactly(kind: str, vector: dict[str, Any]) -> None:
    assert vector["expect"] == GEN.REPLAY[kind](bytes.fromhex(vector["input"]), vector["context"])


def test_every_rejection_reason_of_the_wire_format_has_a_vector() -> None:
    reasons = {v["expect"].get("reason") for k, v in CASES if k != "records"}
    every = {cls.reason for cls in iter_reasons()} - {"wire"}  # "wire" is the abstract root
    assert every <= reasons


def test_the_files_are_what_the_generator_writes() -> None:
    """Regenerate with ``python docs/vectors/generate.py`` after a deliberate change of the format."""
    for kind, doc in GEN.build().items():
        assert GEN.dumps(doc) == (VECTORS / f"{kind}.json").read_text(encoding="utf-8"), kind
