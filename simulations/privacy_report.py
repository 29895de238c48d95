"""Differential privacy in a simulation's trace and report: epsilon spent per round (``[privacy]``).

:func:`privacy_row` adds ``eps`` (epsilon spent after the round) and ``published`` to each trace row of a
peer with DP on; :func:`privacy_summary` turns the honest peers' traces into ``results.json``'s ``privacy``
entry (the budget, the epsilon curve over rounds: honest max and mean, rounds that published) and
:func:`privacy_lines` into the report's lines.
"""

from __future__ import annotations

from typing import Any


def privacy_row(peer: Any) -> dict[str, Any]:
    """``eps`` and ``published`` of the peer's last round (empty with DP off)."""
    if getattr(peer, "privacy", None) is None or not peer.reports:
        return {}
    last = peer.reports[-1]
    return {"eps": last.privacy_epsilon, "published": last.published}


def privacy_summary(scenario: dict[str, Any], honest: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's privacy figures, or None with DP off."""
    cfg = scenario.get("privacy") or {}
    if cfg.get("mode", "off") == "off":
        return None
    rounds = max((len(p.get("trace", [])) for p in honest), default=0)
    eps_max: list[float | None] = []
    eps_mean: list[float | None] = []
    published: list[int] = []
    for r in range(rounds):
        rows = [p["trace"][r] for p in honest if len(p.get("trace", [])) > r]
        eps = [row["eps"] for row in rows if row.get("eps") is not None]
        eps_max.append(round(max(eps), 4) if eps else None)
        eps_mean.append(round(sum(eps) / len(eps), 4) if eps else None)
        published.append(sum(1 for row in rows if row.get("published")))
    final = [e for e in eps_max if e is not None]
    return {
        "mode": cfg.get("mode"),
        "epsilon_budget": cfg.get("epsilon"),
        "delta": cfg.get("delta"),
        "noise_multiplier": cfg.get("noise_multiplier"),
        "clip_norm": cfg.get("clip_norm"),
        "planned_rounds": cfg.get("rounds"),
        "epsilon_final_max": final[-1] if final else None,
        "series": {"eps_max": eps_max, "eps_mean": eps_mean, "published": published},
    }


def privacy_lines(privacy: dict[str, Any] | None) -> list[str]:
    """The report's privacy section: the budget and epsilon over rounds (every round up to 40, then ten)."""
    if privacy is None:
        return []
    s = privacy["series"]
    n = len(s["eps_max"])
    step = 1 if n <= 40 else max(1, n // 10)
    picks = sorted({*range(0, n, step), n - 1}) if n else []
    lines = [
        "## Differential privacy",
        "",
        f"Mode `{privacy['mode']}`, budget epsilon = {privacy['epsilon_budget']} "
        f"at delta = {privacy['delta']}, "
        f"planned over {privacy['planned_rounds']} rounds, clip norm {privacy['clip_norm']}; final epsilon "
        f"spent (honest max) {privacy['epsilon_final_max']}.",
        "",
        "| round | epsilon spent (honest max) | mean | honest peers that published |",
        "|---|---|---|---|",
    ]
    for i in picks:
        lines.append(f"| {i + 1} | {s['eps_max'][i]} | {s['eps_mean'][i]} | {s['published'][i]} |")
    return [*lines, ""]
