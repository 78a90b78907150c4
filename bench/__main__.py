"""`python -m bench <name> [options]`: the project's benchmarks.

Each prints progress to stderr and, as its last line on stdout, one JSON object.
Speed goals live here, never as timed assertions in tests.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "api": "bench.api",
    "export": "bench.export",
    "gate": "bench.gate",
    "ledger": "bench.ledger",
    "nightly": "bench.nightly",
    "soak": "bench.soak",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        names = ", ".join(sorted(BENCHMARKS))
        print(f"usage: python -m bench <{names}> [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
