"""Specialists: neighbours whose model answers one class the own data lack (pure).

On strongly non-IID data (Dirichlet 0.1) some honest peers hold one class only. Each round they train on
it from their mix, and the model they publish answers that class for almost any input. An observer whose
validation split holds other classes sees that model miss every sample, with a loss tens of times its own,
and drift a little beyond its other neighbours: the same evidence a poisoned model leaves. Traced in the
Dirichlet 0.1 dumbbell of seed 2 under link rotation: an honest peer holding only digit 1 answered 1 to
all ten samples of an observer holding 0 and 6 (loss 21-28 against a median of 0.5). The observers without
digit 1 banned it, though it was among the best peers of the run.

What tells it apart is *where* its errors go: all to one class, and one the observer does not hold. A
label-flip model moves each of the observer's classes to another class; a sign-flipped or noisy one
scatters them, or sits far outside the spread, where distance alone convicts it. This module only
recognises the pattern; what the scorer does with it is :mod:`p2pfl.scoring.steps`'s (the loss of such a
model is no eviction evidence while it stays near: ``specialist_share``, ``specialist_distance``).

An attacker who knows the rule can publish a model that answers a class its victims lack. It is then
excused from eviction only at observers that lack the class, only while it stays near, and it still gets
no weight there: its loss still scores it bad in the mix.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["foreign_class"]


def foreign_class(predicted: Sequence[int] | None, own_classes: Collection[int], share: float) -> int | None:
    """The class to which the model assigned at least ``share`` of the own validation samples, when the own
    split holds no sample of it; ``None`` otherwise (also without predictions or samples)."""
    if not predicted:
        return None
    total = sum(predicted)
    if total <= 0:
        return None
    top = max(range(len(predicted)), key=lambda c: predicted[c])
    if predicted[top] < share * total or top in own_classes:
        return None
    return top
