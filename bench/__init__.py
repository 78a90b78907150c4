"""The project's benchmarks (`python -m bench <name>`); see bench/__main__.py."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """Progress for a human, on stderr: stdout's last line is the benchmark's JSON."""
    print(message, file=sys.stderr, flush=True)
