"""The models of the versions the rollout may serve: serving, candidate, earlier serving ones, the base.

Kept in memory and, with a state directory, as self-checking files ``state_dir/models/v<seq>.p2ck`` (the
checkpoint format: atomic, digest-checked, total decoder), so a restarted peer and ``p2pfl versions promote``
find them. :meth:`ModelStore.keep` deletes the others: a peer keeps a handful of models, not its history.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection
from pathlib import Path

from p2pfl.errors import StateError
from p2pfl.state.checkpoint import Checkpoint, Params, load_checkpoint, save_checkpoint

MODELS_DIR = "models"
_NAME = re.compile(r"^v(\d+)\.p2ck$")


def model_name(seq: int) -> str:
    return f"v{seq}.p2ck"


class ModelStore:
    """Version models by seq (``directory`` ``None``: memory only). Not thread-safe: the rollout locks."""

    def __init__(self, directory: Path | None, peer_id: str, network_id: str) -> None:
        self.directory = None if directory is None else directory / MODELS_DIR
        self.peer_id, self.network_id = peer_id, network_id
        self._mem: dict[int, Params] = {}

    def put(self, seq: int, params: Params, round_: int = 0) -> None:
        self._mem[seq] = {k: v.copy() for k, v in params.items()}
        if self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {self.directory}: {exc.strerror or exc}") from exc
        ckpt = Checkpoint(self.peer_id, self.network_id, seq, round_, params, params)
        save_checkpoint(self.directory, ckpt, model_name(seq))

    def get(self, seq: int) -> Params | None:
        """The model of version ``seq``, or ``None`` if it is not kept (or its file is not this peer's)."""
        if seq in self._mem:
            return self._mem[seq]
        if self.directory is None:
            return None
        ckpt = load_checkpoint(self.directory, model_name(seq))  # StateError when corrupt
        if ckpt is None or ckpt.seq != seq or ckpt.peer_id != self.peer_id:
            return None
        self._mem[seq] = ckpt.own
        return ckpt.own

    def seqs(self) -> list[int]:
        """The versions kept (in memory or on disk)."""
        found = set(self._mem)
        if self.directory is not None and self.directory.is_dir():
            for p in self.directory.iterdir():
                m = _NAME.match(p.name)
                if m:
                    found.add(int(m.group(1)))
        return sorted(found)

    def keep(self, seqs: Collection[int]) -> None:
        """Forget every model but those of ``seqs`` (best effort on disk: a file left over is harmless)."""
        for seq in [s for s in self._mem if s not in seqs]:
            del self._mem[seq]
        if self.directory is None or not self.directory.is_dir():
            return
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m and int(m.group(1)) not in seqs:
                with contextlib.suppress(OSError):
                    p.unlink()
