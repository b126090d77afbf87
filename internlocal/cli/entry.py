"""Console script ``internlocal``: no arguments opens the TUI without importing the CLI stack."""

from __future__ import annotations

import sys


def main() -> None:
    from internlocal.errors import UserError

    try:
        if len(sys.argv) == 1:
            from internlocal.tui.app import run

            sys.exit(run())
        from internlocal.cli.main import app

        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
