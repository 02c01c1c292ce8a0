"""run.sh's `upgrades` stage: install a carried wheel of a package the machine already has, only when the
machine's copy is older than what the carried wheels need (bench/gpu/wheels-if-older.txt).

    python bench/gpu/install_if_older.py --list bench/gpu/wheels-if-older.txt --wheels .whl/if-older --target SITE

The machine's typing_extensions version is not recorded; pydantic 2.13.5 needs >= 4.14.1 (with 4.12.2 every
DeepSpeed import fails: `cannot import name 'Sentinel'`). Installing into the kit's --target folder, which is first
on PYTHONPATH, shadows the machine's copy for the kit only. Exit 1 when a needed upgrade has no wheel or fails.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.version import Version


def read_list(path: Path) -> list[tuple[str, str, str]]:
    """(name, carried version, minimum) per line of wheels-if-older.txt."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = re.sub(r"#.*", "", line).strip()
        if line:
            pin, minimum = line.split()
            name, version = pin.split("==")
            out.append((name, version, minimum))
    return out


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def wheel_for(folder: Path, name: str, version: str) -> Path | None:
    stem = re.sub(r"[-_.]+", "_", name).lower()
    return next((p for p in sorted(folder.glob("*.whl")) if p.name.lower().startswith(f"{stem}-{version}-")), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", type=Path, required=True)
    parser.add_argument("--wheels", type=Path, required=True)
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="say what would be installed, install nothing")
    args = parser.parse_args(argv)
    code = 0
    for name, version, minimum in read_list(args.list):
        have = installed(name)
        if have is not None and Version(have) >= Version(minimum):
            print(f"{name}: the machine has {have} (>= {minimum}): kept")
            continue
        wheel = wheel_for(args.wheels, name, version)
        if wheel is None:
            print(f"{name}: the machine has {have or 'none'} (< {minimum}) and {args.wheels} holds no {name} {version} "
                  "wheel: run bench/gpu/fetch_wheels.sh and carry .whl")
            code = 1
            continue
        print(f"{name}: the machine has {have or 'none'} (< {minimum}): installing {wheel.name}")
        if not args.dry_run:
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                   "--no-compile", "--upgrade", "--target", str(args.target), str(wheel)], check=False)
            code = code or proc.returncode
    return code


if __name__ == "__main__":
    sys.exit(main())
