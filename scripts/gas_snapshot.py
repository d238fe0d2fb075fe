"""Measure the vault's gas figures on the embedded chain and write gas-snapshot.json.

The figures come from `tests/contracts/gas.py` (one scenario, shared with the test that guards them).
`--check` measures again and exits 1 when any figure differs from the committed snapshot; both modes refuse a
figure above its issue 12 ceiling (partial close 40,000 owner / 42,000 operator, ladder tier 45,000).

Usage:
    python scripts/gas_snapshot.py            # (re)write gas-snapshot.json
    python scripts/gas_snapshot.py --check    # fail if gas-snapshot.json is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the measuring code lives in the test package, next to the EIP-712 helpers

from tests.contracts.gas import (  # noqa: E402
    SNAPSHOT_PATH,
    differences,
    load_snapshot,
    measure_gas,
    over_ceilings,
    render_snapshot,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed snapshot is out of date")
    args = parser.parse_args(argv)
    measured = measure_gas()
    for name, used in measured.items():
        print(f"{name:<36} {used:>8}")
    ceilings = over_ceilings(measured)
    for problem in ceilings:
        print(problem, file=sys.stderr)
    if ceilings:
        print("a figure is above its ceiling: the snapshot is not written", file=sys.stderr)
        return 1
    if args.check:
        problems = differences(measured, load_snapshot())
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(
                f"{SNAPSHOT_PATH.name} is out of date: run `python scripts/gas_snapshot.py`", file=sys.stderr
            )
            return 1
        print(f"{SNAPSHOT_PATH.name} is up to date")
        return 0
    SNAPSHOT_PATH.write_text(render_snapshot(measured))
    print(f"wrote {SNAPSHOT_PATH.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
