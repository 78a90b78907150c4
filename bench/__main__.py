"""`python -m bench <name> [args]`: run one benchmark. The last line it prints is one JSON
object when given --json. Each benchmark is a module with `main(argv) -> int`."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "gate": "bench.gate",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(
            f"usage: python -m bench {{{','.join(sorted(BENCHMARKS))}}} [--json]", file=sys.stderr
        )
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
