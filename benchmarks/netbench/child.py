"""Re-run a benchmark script as its own measured child process that writes its figures as JSON.

bench_scale and bench_network measure each configuration in a fresh interpreter (imports and start-up
included, nothing left over from the previous one) whose process tree :mod:`.proctree` samples for CPU
seconds and peak memory; the child writes its own figures to a file the parent reads back.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from . import proctree

#: the directory holding the benchmark scripts and ``netbench`` (a child imports both from it)
BENCHMARKS = Path(__file__).resolve().parent.parent


def run_child(
    script: str | Path,
    args: list[str],
    result: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> tuple[dict[str, Any] | None, proctree.Usage]:
    """Run ``python script --_result result *args`` with ``env`` added to this process's environment and
    the benchmarks directory on ``PYTHONPATH``; its figures (the JSON object it wrote to ``result``, None if
    it wrote none) and its tree's usage. Raises RuntimeError if the child exits non-zero."""
    result.unlink(missing_ok=True)
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS), os.environ.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(Path(script).resolve()), "--_result", str(result), *args]
    usage = proctree.run_measured(cmd, env=child_env, timeout=timeout)
    figures = json.loads(result.read_text()) if result.exists() else None
    if figures is not None and not isinstance(figures, dict):
        raise RuntimeError(f"{result}: expected a JSON object, got {type(figures).__name__}")
    return figures, usage
