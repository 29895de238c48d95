"""Serving vs training versions: quality deltas, shadow and canary rollout (docs/rollout.md).

- ``config``: :class:`RolloutConfig`, the ``[rollout]`` section.
- ``policy``: the pure state machine (:class:`RolloutPolicy`, :func:`replay`, :func:`routes_to_canary`).
- ``feedback``: the host's labelled feedback, checked (:class:`FeedbackError`) and bounded.
- ``models``: the kept models of serving, candidate, earlier serving and base versions.
- ``runtime``: :class:`Rollout`, the peer's side (per-round evaluation, what is served).
- ``offline``: what ``p2pfl versions`` reads and appends while the peer is stopped.
"""

from __future__ import annotations

from p2pfl.rollout.config import RolloutConfig
from p2pfl.rollout.feedback import FeedbackError
from p2pfl.rollout.policy import EVENTS, Event, RolloutPolicy, RolloutState, replay, routes_to_canary
from p2pfl.rollout.runtime import Rollout, RoundQuality, Served

__all__ = [
    "EVENTS",
    "Event",
    "FeedbackError",
    "Rollout",
    "RolloutConfig",
    "RolloutPolicy",
    "RolloutState",
    "RoundQuality",
    "Served",
    "replay",
    "routes_to_canary",
]
