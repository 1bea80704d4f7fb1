#!/usr/bin/env python3
"""Reads a kosoku report (index.json) and fails unless it holds exactly the expected number of cases and every
one of them passed: behaviour and close behaviour each OK, NON-STRICT or INFORMATIONAL, as Autobahn counts a
pass. Prints every failing case with its verdicts and close code.

Usage: check_report.py REPORT_DIR EXPECTED_CASES
"""

import json
import sys
from pathlib import Path

PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def main():
    outdir, expected = Path(sys.argv[1]), int(sys.argv[2])
    index_path = outdir / "index.json"
    if not index_path.exists():
        print(f"FAIL: no report at {index_path}", file=sys.stderr)
        return 1
    index = json.loads(index_path.read_text())
    cases = {}
    for agent, results in index.items():
        for case_id, result in results.items():
            cases[case_id] = (agent, result)

    failing = []
    counts = {}
    for case_id in sorted(cases, key=case_key):
        agent, result = cases[case_id]
        behavior, close = result.get("behavior"), result.get("behaviorClose")
        counts[behavior] = counts.get(behavior, 0) + 1
        if behavior not in PASS or close not in PASS:
            failing.append(
                f"  {case_id}: behavior={behavior} behaviorClose={close} "
                f"remoteCloseCode={result.get('remoteCloseCode')} "
                f"report={outdir / result.get('reportfile', '?')}"
            )

    summary = ", ".join(f"{n} {b}" for b, n in sorted(counts.items()))
    print(f"autobahn: {len(cases)} cases in {index_path} ({summary})")
    ok = True
    if failing:
        print(f"FAIL: {len(failing)} case(s) did not pass:", file=sys.stderr)
        print("\n".join(failing), file=sys.stderr)
        ok = False
    if len(cases) != expected:
        # kosoku may write only the failing cases when a run fails, so a short count alone is not the cause.
        print(f"{'FAIL' if not failing else 'note'}: expected {expected} cases, the report has {len(cases)}",
              file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
