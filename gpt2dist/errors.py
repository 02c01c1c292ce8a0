"""The one exception type that means "the user can fix this" (exit code 2, one line, no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in a config, a path or an argument: reported as one line naming the key or file and the fix."""


def run_or_exit(main, *args, **kwargs):
    """Call `main`; a UserError becomes one line on stderr and exit code 2, with no traceback."""
    import sys

    try:
        return main(*args, **kwargs)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
