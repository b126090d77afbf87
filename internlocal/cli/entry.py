"""Console script ``internlocal``: no arguments opens the TUI without importing the CLI stack.

A shell's completion request also comes with no arguments (its words travel in environment variables):
it goes to the CLI, which answers it, and never opens the TUI. Exit codes are listed in ``errors.py``.
"""

from __future__ import annotations

import os
import sys

from internlocal.i18n import _, resolve_language, set_language


def main() -> None:
    from internlocal.errors import EXIT_BUG, EXIT_INTERRUPTED, UserError

    set_language(resolve_language())  # before the CLI's help and the screens are made: they are translated
    completing = any(name.startswith("_INTERNLOCAL_COMPLETE") for name in os.environ)
    try:
        if len(sys.argv) == 1 and not completing:
            from internlocal.logs import configure
            from internlocal.tui.app import run

            configure()
            sys.exit(run())
        from internlocal.cli.main import run as run_cli

        run_cli()
    except UserError as exc:
        print(_("error: {message}").format(message=exc), file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: its traceback, and an exit code that says so
        from internlocal.errors import disk_full

        full = disk_full(exc)
        if full is not None:  # not a bug: the machine's disk is full
            print(_("error: {message}").format(message=full), file=sys.stderr)
            sys.exit(full.exit_code)
        import traceback

        traceback.print_exc()
        print(
            _("internal error: this is a bug in internlocal; please report it with the traceback above."),
            file=sys.stderr,
        )
        sys.exit(EXIT_BUG)


if __name__ == "__main__":
    main()
