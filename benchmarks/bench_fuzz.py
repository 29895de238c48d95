"""Structure-aware fuzz of every decoder of remote bytes (envelope, header, payload, peer record).

Inputs start from valid sealed envelopes, payloads and records signed by real identities and are mutated byte
by byte (flips, truncation, extension, splices, huge declared lengths, swapped fields) or re-encoded and
re-signed (unknown and bin-typed keys, wrong types, non-shortest integers, pathological shapes and dtypes,
non-finite values, deep nesting); the generator is ``tests/fuzzing.py``, shared with the test suite's
fixed-seed slice. Each input is classified: accepted (and should be), WRONGLY_ACCEPTED (bug: not canonical,
or a signed input accepted with another meaning), rejected by reason slug, or ESCAPED (bug: an exception
outside the error taxonomy). Target: 0 bugs. Exit status 1 if any bug.

    python benchmarks/bench_fuzz.py --count 1000000 [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

# The generator lives with the tests (it needs their strategies); benchmarks are scripts, not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzzing import BUG_PREFIXES, TARGETS, run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000, help="inputs to generate (default 100000)")
    ap.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--bugs", type=int, default=5, help="bugs to print with tracebacks (default 5)")
    args = ap.parse_args()

    def progress(n: int) -> None:
        if not args.json and n % 100_000 == 0:
            print(f"  {n:,} inputs, {n / (time.perf_counter() - t0):,.0f}/s", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    report = run(args.count, args.seed, max_bugs=args.bugs, progress=progress)
    seconds = time.perf_counter() - t0
    labels = sorted({label for _, label in report.counts}, key=lambda s: (s.startswith(BUG_PREFIXES), s))
    totals = Counter[str]()
    for (_, label), v in report.counts.items():
        totals[label] += v
    if args.json:
        out = {
            "count": report.n,
            "seed": args.seed,
            "seconds": round(seconds, 1),
            "inputs_per_s": round(report.n / seconds),
            "bugs": report.bug_count,
            "by_target": {
                t: {lb: report.counts[(t, lb)] for lb in labels if report.counts[(t, lb)]} for t in TARGETS
            },
            "by_label": dict(sorted(totals.items())),
            "by_mutation": {f"{m} {lb}": v for (m, lb), v in sorted(report.by_mutation.items())},
        }
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{report.n:,} inputs (seed {args.seed}) in {seconds:.1f} s: {report.n / seconds:,.0f} inputs/s"
        )
        print(f"{'outcome':32}" + "".join(f"{t:>10}" for t in TARGETS) + f"{'total':>10}")
        for label in labels:
            row = "".join(f"{report.counts[(t, label)]:>10,}" for t in TARGETS)
            print(f"{label:32}{row}{totals[label]:>10,}")
        print(f"bugs (WRONGLY_ACCEPTED + ESCAPED): {report.bug_count} (target 0)")
    for case, label, detail in report.bugs:
        print(f"\n{label}: {case.target} / {case.mutation}: {case.data[:96].hex()}", file=sys.stderr)
        print(detail, file=sys.stderr)
    return 1 if report.bug_count else 0


if __name__ == "__main__":
    sys.exit(main())
