"""Issue 15's measurements of one run, written as ``results.json["attacks"]`` (see ``runner.run_scenario``).

Per honest peer-local round ``r`` (the ``r``-th trace row of each honest peer):

* ``acc_mean`` / ``acc_min``: honest test accuracy;
* ``round_s_p50`` / ``round_s_p95``: honest seconds per round (time between the peer's rows ``r-1`` and
  ``r``; row 0 counts from the start);
* ``attacker_share_max``: the largest mixing share any honest peer gave any attacker or Sybil that round
  (``simulations.observe``), ``attacker_share_total``: the mean over honest peers of the summed shares.

Over the run: ``round_s`` (p50/p95 of every honest round), ``bans`` (every (observer, banned) pair with the
observer's round and the reason when the round's eviction gave one; ``by_reason``, ``by_round``, and
``honest_banned``: honest peers banned by honest ones), ``attackers`` (per attacker or Sybil: kind, max share,
honest records that mixed it with a share > 0, how many of those came after that observer's first record of
it, how many honest peers banned it and at which rounds, and how many requests (snapshot, payload fetches)
it served: 0 means no byte of its models was fetched), ``refusals`` (access refusals at honest peers) and
``windows`` (mean / min of ``acc_mean`` and p50 of ``round_s_p50`` before, during and after the Sybils'
rounds ``join_round`` .. ``leave_round``); for a flood, ``flood``: honest round times before and during it;
``links``: the attackers' share of the honest peers' links (:func:`link_share`); ``held``: the largest share
given ten rounds or more after each pair's first contact (:func:`held_after_contact`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _durations(trace: list[dict[str, Any]]) -> list[float]:
    out, last = [], 0.0
    for row in trace:
        out.append(max(float(row["t"]) - last, 0.0))
        last = float(row["t"])
    return out


def link_share(honest: list[dict[str, Any]], after: int = 4) -> dict[str, float | None]:
    """The attackers' hold on the honest peers' learning links (the links their mix filter admits) after
    round ``after`` (trace rows' ``linked``): ``attacker_share``, their mean share of a peer's learning
    links, and ``exposed``, how often they held half or more of them (the fight of ``[attack] redial``
    against link rotation and chosen links). None without such rows."""
    shares, exposed = [], 0
    for p in honest:
        for row in p.get("trace", []):
            links, bad = row.get("linked", (0, 0))
            if row["round"] > after and links:
                shares.append(bad / links)
                exposed += bad * 2 >= links
    return {
        "attacker_share": _mean(shares),
        "exposed": round(exposed / len(shares), 4) if shares else None,
    }


def held_after_contact(
    honest: list[dict[str, Any]], attackers: set[str], rounds: int = 10, share: float = 0.1
) -> dict[str, Any]:
    """Issue 16's "held at a mixing weight <= ``share`` within ``rounds`` rounds", counted for each (honest
    peer, attacker) pair from the pair's first contact: the peer's first round with the attacker among its
    mixing inputs (trace rows' ``mix``). On a static graph contact is in the first rounds, as the run-round
    measure assumes; with link rotation a peer meets attackers all run long, and each meeting has its own
    ten rounds. ``share_max``: the largest share any pair gave from its contact's round + ``rounds`` on;
    ``pairs`` met and ``over``: pairs above ``share`` then."""
    worst: dict[tuple[str, str], float] = {}
    for p in honest:
        first: dict[str, int] = {}
        for row in p.get("trace", []):
            for aid, got in row.get("mix", {}).items():
                if aid not in attackers:
                    continue
                since = first.setdefault(aid, row["round"])
                key = (p["id"], aid)
                worst.setdefault(key, 0.0)
                if row["round"] >= since + rounds:
                    worst[key] = max(worst[key], float(got))
    return {
        "rounds": rounds,
        "share_max": round(max(worst.values()), 4) if worst else None,
        "pairs": len(worst),
        "over": sum(1 for v in worst.values() if v > share),
    }


def attack_metrics(output: Any) -> dict[str, Any]:
    """The issue-15 figures of a :class:`simulations.runner.RunOutput` (see the module docstring)."""
    plan = output.plan
    sc = plan.scenario
    peers: list[dict[str, Any]] = output.peers
    honest = [p for p in peers if p["honest"]]
    honest_ids = {p["id"] for p in honest}
    attackers = {p["id"]: p for p in peers if not p["honest"]}
    index_of = {p["id"]: p["index"] for p in peers}
    durations = {p["id"]: _durations(p.get("trace", [])) for p in honest}
    rounds = max((len(p.get("trace", [])) for p in honest), default=0)

    series: dict[str, list[Any]] = {
        k: []
        for k in (
            "round",
            "acc_mean",
            "acc_min",
            "round_s_p50",
            "round_s_p95",
            "attacker_share_max",
            "attacker_share_total",
        )
    }
    for r in range(rounds):
        rows = [p["trace"][r] for p in honest if len(p.get("trace", [])) > r]
        accs = [float(row["acc"]) for row in rows if row.get("acc") is not None]
        secs = [durations[p["id"]][r] for p in honest if len(durations[p["id"]]) > r]
        shares = [v for row in rows for v in row.get("mix", {}).values()]
        series["round"].append(r + 1)
        series["acc_mean"].append(_mean(accs))
        series["acc_min"].append(round(min(accs), 4) if accs else None)
        series["round_s_p50"].append(_pct(secs, 50))
        series["round_s_p95"].append(_pct(secs, 95))
        series["attacker_share_max"].append(round(max(shares), 4) if shares else 0.0)
        series["attacker_share_total"].append(_mean([sum(row.get("mix", {}).values()) for row in rows]))

    bans: list[dict[str, Any]] = []
    for p in honest:
        seen: set[str] = set()
        for row in p.get("trace", []):
            reasons = row.get("evict_reasons", {})
            for q in row.get("banned", []):
                if q in seen:
                    continue
                seen.add(q)
                bans.append(
                    {
                        "observer": p["index"],
                        "banned": index_of.get(q),
                        "round": row["round"],
                        "reason": reasons.get(q, "other"),
                        "honest": q in honest_ids,
                    }
                )
    per_attacker = {}
    # one pass over the honest traces for all attackers (per attacker, it was attackers x honest x rounds:
    # 86.8 s of a 10,000-peer run's report)
    mixed = dict.fromkeys(attackers, 0)
    after_first = dict.fromkeys(attackers, 0)
    share_max = dict.fromkeys(attackers, 0.0)
    for p in honest:
        seen_here: set[str] = set()
        for row in p.get("trace", []):
            for aid, share in row.get("mix", {}).items():
                if aid not in attackers:
                    continue
                share_max[aid] = max(share_max[aid], share)
                if share > 0:
                    mixed[aid] += 1
                    after_first[aid] += 1 if aid in seen_here else 0
                seen_here.add(aid)
    banned_rounds: dict[Any, list[int]] = {}
    for b in bans:
        banned_rounds.setdefault(b["banned"], []).append(b["round"])
    for aid, a in attackers.items():
        banned_at = sorted(banned_rounds.get(a["index"], []))
        per_attacker[str(a["index"])] = {
            "kind": a["kind"],
            "requests_served": a.get("requests_served", 0),
            "share_max": round(share_max[aid], 4),
            "mixed_records": mixed[aid],
            "mixed_after_first": after_first[aid],
            "banned_by": len(banned_at),
            "banned_rounds": banned_at,
            **({"attack": a["attack"]} if "attack" in a else {}),
        }
    all_secs = [d for ds in durations.values() for d in ds]
    return {
        "links": link_share(honest),
        "held": held_after_contact(honest, set(attackers)),
        "series": series,
        "round_s": {"p50": _pct(all_secs, 50), "p95": _pct(all_secs, 95)},
        "bans": {
            "events": bans,
            "by_reason": dict(sorted(Counter(b["reason"] for b in bans).items())),
            "by_round": {str(k): v for k, v in sorted(Counter(b["round"] for b in bans).items())},
            "honest_banned": sum(1 for b in bans if b["honest"]),
        },
        "attackers": per_attacker,
        "attacker_share_max": max(series["attacker_share_max"], default=0.0),
        # access refusals counted at honest peers (transport peer filter, engine access list), by reason
        "refusals": _refusals(honest),
        "windows": _windows(sc, series),
        **({"flood": _flood_window(honest, attackers)} if sc.attack.kind == "flood" else {}),
    }


def _windows(sc: Any, series: dict[str, list[Any]]) -> dict[str, Any]:
    """Accuracy and round time before, during and after the attack's rounds (1-based honest rounds)."""
    if sc.sybil.count:
        start, end = sc.sybil.join_round + 1, sc.sybil.leave_round or len(series["round"])
    else:
        return {}

    def window(lo: int, hi: int) -> dict[str, Any]:
        idx = [i for i, r in enumerate(series["round"]) if lo <= r <= hi]
        accs = [series["acc_mean"][i] for i in idx if series["acc_mean"][i] is not None]
        mins = [series["acc_min"][i] for i in idx if series["acc_min"][i] is not None]
        secs = [series["round_s_p50"][i] for i in idx if series["round_s_p50"][i] is not None]
        return {
            "rounds": [lo, hi],
            "acc_mean": _mean(accs),
            "acc_min": round(min(mins), 4) if mins else None,
            "round_s_p50": _pct(secs, 50),
            "round_s_max": round(max(secs), 4) if secs else None,
        }

    last = len(series["round"])
    return {
        "before": window(max(2, start - 4), start - 1),
        "during": window(start, end),
        "after": window(end + 3, last),
    }


#: seconds after the burst's last send still counted as "during" it
FLOOD_SETTLE_S = 2.0


def _flood_window(honest: list[dict[str, Any]], attackers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Honest seconds per round before the burst (rounds ending before it, the first round excluded: it
    includes the start) and during it (rounds overlapping the burst's seconds, extended by
    ``FLOOD_SETTLE_S``: receivers work through a burst after its last byte was sent), p50 and max of each;
    and what the honest peers refused meanwhile (their rejection counters, by reason: the burst's
    messages that reached their validators and were dropped there)."""
    bursts = [a["attack"]["flood_sent"] for a in attackers.values() if a.get("attack", {}).get("flood_sent")]
    if not bursts:
        return {"sent": False}
    lo, sent_until = min(b["t"][0] for b in bursts), max(b["t"][1] for b in bursts)
    hi = sent_until + FLOOD_SETTLE_S
    refused: Counter[str] = Counter()
    for p in honest:
        for k, v in p.get("rejected", {}).items():
            if not k.startswith("transport:") or k == "transport:gossip_invalid":
                refused[k] += int(v)
    before, during = [], []
    for p in honest:
        trace = p.get("trace", [])
        for r in range(1, len(trace)):
            t0, t1 = float(trace[r - 1]["t"]), float(trace[r]["t"])
            if t1 < lo:
                before.append(t1 - t0)
            elif t0 <= hi:
                during.append(t1 - t0)
    p50_before = _pct(before, 50)
    return {
        "sent": True,
        "t": [lo, sent_until],
        "count": sum(int(b["count"]) for b in bursts),
        "refused_at_honest": dict(sorted(refused.items())),
        "ratio_p50": round(_pct(during, 50) / p50_before, 2) if during and p50_before else None,
        "before": {"p50": p50_before, "max": round(max(before), 4) if before else None},
        "during": {"p50": _pct(during, 50), "max": round(max(during), 4) if during else None},
        "ratio_max": round(max(during) / max(before), 2) if during and before else None,
        "ratio_max_to_before_p50": round(max(during) / p50_before, 2) if during and p50_before else None,
    }


def _refusals(honest: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for p in honest:
        for k, v in p.get("rejected", {}).items():
            if "peer_filter" in k or "not_allowed" in k or "refused" in k:
                total[k] += int(v)
    return dict(sorted(total.items()))
