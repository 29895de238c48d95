"""Secure aggregation for mean mode (Bonawitz et al. 2017, SecAgg+ style), sans I/O.

A configured group of peers computes the mean of its members' models without any member, or anyone
listening, seeing another member's model; see docs/secagg.md. Modules: ``fixedpoint`` (float32 <-> Z/2^32),
``crypto`` (X25519 from Ed25519, seeds, PRG), ``shamir`` (threshold sharing), ``messages`` (the signed
messages and their total decoders), ``spec`` (GroupSpec), ``group`` (GroupRound, the state machine),
``masking`` (its state and maths: dealing, masking, unmasking), ``config`` ([secagg] settings).
"""

from p2pfl.secagg.errors import REASONS, SecAggError
from p2pfl.secagg.fixedpoint import FixedPoint
from p2pfl.secagg.group import GroupResult, GroupRound, Phase, Send
from p2pfl.secagg.spec import GroupSpec

__all__ = [
    "REASONS",
    "FixedPoint",
    "GroupResult",
    "GroupRound",
    "GroupSpec",
    "Phase",
    "SecAggError",
    "Send",
]
