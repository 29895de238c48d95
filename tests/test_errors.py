"""The error taxonomy: every error raised on purpose is a P2PFLError, by layer; a builtin exception is
raised only where the allow-list below says why (a programming-error guard, or a protocol of Python's)."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

from p2pfl import errors
from p2pfl.errors import (
    AggregationError,
    ConfigError,
    IdentityError,
    P2PFLError,
    ProtocolViolationError,
    RequestTimeoutError,
    ResponseTooLargeError,
    StateError,
    TransportError,
)

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_EXCEPTIONS = {
    name
    for name in dir(builtins)
    if isinstance(getattr(builtins, name), type) and issubclass(getattr(builtins, name), BaseException)
}

#: (exception, a fragment of its message) -> why a builtin is right there. Keyed by message, not by file and
#: line, so the list survives modules moving into packages.
ALLOWED: dict[tuple[str, str], str] = {
    ("AttributeError", "has no attribute"): "module __getattr__ must raise AttributeError (PEP 562)",
    ("OSError", "not a regular file or a pipe"): "p2pfl inspect folds it into its OSError handling",
    ("OSError", "exc.errno"): "atomic_write re-raises the OSError naming the target, not its temp file",
    ("ValueError", "parameter names differ"): "Learner.set_params guard: the host passed another model",
    ("ValueError", "parameter {name!r} has shape"): "Learner.set_params guard: the host passed another model",
    ("ValueError", "Dataset needs x of shape"): "Dataset guard: the host built arrays of the wrong rank",
    ("ValueError", "at least one training example"): "learner constructor guard; config loading wraps it",
    ("ValueError", "lr_decay"): "learner constructor guard; config loading wraps it as [learner.params]",
    ("ValueError", "prox"): "learner constructor guard; config loading wraps it as [learner.params]",
    ("ValueError", "Limits."): "Limits guard: a developer passing bounds numpy cannot represent",
    ("ValueError", "tensor {name!r} has shape"): "Layout.flatten guard: the own learner changed its shapes",
    ("ValueError", "max_entries must be"): "PeerCache constructor guard: a developer passing a bad size",
    (
        "KeyError",
        "KeyError(codec)",
    ): "PayloadSizes.__getitem__: the mapping protocol, for a name that is no codec",
    ("TypeError", "handler returned"): "a request handler broke its contract (bytes); answered as internal",
    ("ImportError", "mlxtend"): "an optional dependency is missing: ImportError is what callers expect",
    # PeerCache._load raises these inside its own try and turns them into an empty cache plus a warning
    ("ValueError", "exceeds {self.MAX_FILE_BYTES}"): "PeerCache._load: caught in the same function",
    ("ValueError", "not a {self.FORMAT} file"): "PeerCache._load: caught in the same function",
    ("ValueError", "'records' is not a list"): "PeerCache._load: caught in the same function",
    ("ValueError", "entry is not an object"): "PeerCache._load: caught in the same function",
    ("ValueError", "last_seen is not a number"): "PeerCache._load: caught in the same function",
}


def _builtin_raises() -> list[tuple[str, str, str]]:
    """``(where, exception, source)`` of each ``raise <builtin>(...)`` in p2pfl, bootstrap, simulations."""
    out = []
    for folder in ("p2pfl", "bootstrap", "simulations"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(text)):
                if not isinstance(node, ast.Raise) or node.exc is None:
                    continue
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(target, ast.Name) and target.id in BUILTIN_EXCEPTIONS:
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    out.append((where, target.id, ast.get_source_segment(text, node) or ""))
    return out


def test_every_builtin_raise_is_converted_or_allowed_with_a_reason() -> None:
    found = _builtin_raises()
    assert found, "the walk found nothing: it is not looking where the code is"
    unexplained = [
        f"{where}: {source}"
        for where, name, source in found
        if not any(name == exc and fragment in source for (exc, fragment) in ALLOWED)
    ]
    assert not unexplained, "raise a P2PFLError subclass, or allow-list with a reason:\n" + "\n".join(
        unexplained
    )


def test_the_allow_list_has_no_stale_entries() -> None:
    found = _builtin_raises()
    stale = [key for key in ALLOWED if not any(n == key[0] and key[1] in s for _, n, s in found)]
    assert not stale
    assert all(reason.strip() for reason in ALLOWED.values())


@pytest.mark.parametrize(
    ("error", "family"),
    [
        (ConfigError, P2PFLError),
        (StateError, P2PFLError),
        (IdentityError, P2PFLError),
        (AggregationError, P2PFLError),
        (TransportError, P2PFLError),
        (ResponseTooLargeError, TransportError),
        (RequestTimeoutError, TransportError),
        (ProtocolViolationError, TransportError),
    ],
)
def test_families(error: type[Exception], family: type[Exception]) -> None:
    assert issubclass(error, family)


def test_every_error_class_of_the_library_is_a_p2pfl_error() -> None:
    from p2pfl import discovery, wire
    from p2pfl.sim import scenario, scenario_attacks

    classes = [
        obj
        for module in (errors, wire, discovery, scenario, scenario_attacks)
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Exception)
        and (obj.__module__ == module.__name__ or obj.__module__.startswith(module.__name__ + "."))
    ]
    names = {c.__name__ for c in classes}
    assert {"WireError", "ConfigError", "ScenarioError", "SimulationError", "RecordError"} <= names
    assert [c.__name__ for c in classes if not issubclass(c, P2PFLError)] == []
    assert issubclass(scenario.ScenarioError, ConfigError)
