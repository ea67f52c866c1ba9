"""The `hushwire` console script. It imports the client only inside its own guard, so a
Ctrl-C while the modules load ends with one line instead of an import traceback."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from hushwire.client.cli import main as run

        return run()
    except KeyboardInterrupt:
        print("hushwire: interrupted while starting; nothing was done", file=sys.stderr)
        return 130
