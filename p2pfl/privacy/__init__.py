"""Differential privacy for p2pfl peers (docs/privacy.md).

``config`` (``[privacy]``: :class:`PrivacyConfig`), ``accountant`` (dp-accounting's RDP/PLD accountants and
noise calibration), ``budget`` (:class:`PrivacyBudget`: epsilon per published round, pure), ``dpsgd`` and
``dpsgd_torch`` (record-level DP-SGD for the numpy and torch learners), ``peerdp`` (peer-level clipping and
noise of the published delta), ``runtime`` (:class:`PeerPrivacy`: the peer's side).

dp-accounting is imported on first use, so importing this package costs nothing when DP is off.
"""

from __future__ import annotations

from p2pfl.privacy.accountant import Mechanism, calibrate, epsilon
from p2pfl.privacy.budget import PrivacyBudget
from p2pfl.privacy.config import PrivacyConfig
from p2pfl.privacy.dpsgd import DPSGD
from p2pfl.privacy.peerdp import privatise_delta
from p2pfl.privacy.runtime import PeerPrivacy, RecordDPLearner

__all__ = [
    "DPSGD",
    "Mechanism",
    "PeerPrivacy",
    "PrivacyBudget",
    "PrivacyConfig",
    "RecordDPLearner",
    "calibrate",
    "epsilon",
    "privatise_delta",
]
