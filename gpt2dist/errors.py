"""The one exception type that means "the user can fix this" (exit code 2, one line, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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


def read_json_object(path: Path, prefix: str, not_an_object: str) -> dict[str, Any]:
    """A JSON file a user gave us, as a mapping: unreadable, undecodable or not an object is one UserError line
    (`prefix` names the key or role before the path; `not_an_object` is the whole line for a list or a number)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise UserError(f"{prefix}{path} is not readable JSON ({first})") from None
    if not isinstance(data, dict):
        raise UserError(not_an_object)
    return data
