#!/usr/bin/env bash
# Fetch, here, the wheels the GPU machine lacks into .whl/ (git-ignored), then check that nothing is missing.
#
#   bash bench/gpu/fetch_wheels.sh        # needs pip + network to PyPI and this repo's venv (torch, deepspeed)
#
# deepspeed is built here as a pure-Python wheel with no prebuilt ops (DS_BUILD_OPS=0; its ops JIT-compile on first
# use, and gpt2dist's DeepSpeed config needs none: torch AdamW, no offload). The rest are the pinned cp312 manylinux
# x86_64 wheels of bench/gpu/wheels.txt. The folder is rebuilt from scratch, so it holds exactly one version of each.
set -euo pipefail

cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
DEST=.whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

ds_version=$("$PYTHON" -c 'from importlib.metadata import version; print(version("deepspeed"))' 2>/dev/null) || {
    echo "fetch_wheels.sh: deepspeed is not installed for $PYTHON: activate the project's venv first" >&2
    exit 2
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== building deepspeed $ds_version (pure Python, no prebuilt ops)"
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation "deepspeed==$ds_version" -w "$tmp"
wheel=$(ls "$tmp"/deepspeed-*.whl)
case "$wheel" in
    *-py3-none-any.whl) ;;
    *) echo "fetch_wheels.sh: $wheel is not a py3-none-any wheel" >&2; exit 1 ;;
esac
if "$PYTHON" -m zipfile -l "$wheel" | grep -E '\.so(\.| |$)'; then
    echo "fetch_wheels.sh: $wheel holds compiled extensions (above): it must be pure Python" >&2
    exit 1
fi

echo "== downloading bench/gpu/wheels.txt for CPython 3.12 manylinux x86_64"
mapfile -t pins < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' bench/gpu/wheels.txt)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$tmp" "${pins[@]}"

echo "== downloading bench/gpu/wheels-if-older.txt (installed there only when the machine's copy is older)"
mapfile -t upgrades < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' bench/gpu/wheels-if-older.txt | awk '{print $1}')
mkdir -p "$tmp/if-older"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$tmp/if-older" "${upgrades[@]}"

rm -rf "$DEST"
mkdir -p "$DEST"
mv "$tmp"/*.whl "$DEST"/
mv "$tmp/if-older" "$DEST"/
echo "== $DEST: $(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) (a device call carries at most 64 MiB)"
ls -1 "$DEST" "$DEST/if-older"
echo "== check_wheels.py"
"$PYTHON" bench/gpu/check_wheels.py --wheels "$DEST"
