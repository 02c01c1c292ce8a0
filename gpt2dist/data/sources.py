"""Data files named by URL -- `hf://datasets/ORG/NAME/...`, `s3://...`, `https://...`, `file://...` -- streamed.

A Hugging Face hub dataset (or a bucket) is a list of data files; `datasets` streams each one through fsspec,
so the streaming path shards, resumes and counts them exactly like local files and never downloads a corpus
whole. Local paths stay `pathlib.Path`; a URL becomes a `RemoteFile` carrying the facts the data path and the
doctor use (name, suffix, size), taken from one listing when the config is read.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from gpt2dist.errors import UserError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(entry: str) -> bool:
    return bool(_URL.match(entry))


@dataclass(frozen=True)
class RemoteFile:
    """One data file behind a URL; `str()` is the URL that `datasets` and fsspec open."""

    url: str
    size: int

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    def __str__(self) -> str:
        return self.url


DataFile = Path | RemoteFile


def expand_url(pattern: str, key: str) -> list[RemoteFile]:
    """The files a URL or URL glob names, sorted like local globs; errors name the key and the fix."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(pattern)
        paths = sorted(fs.glob(path)) if glob.has_magic(path) else [path]
        infos = [fs.info(p) for p in paths]
    except (ImportError, ValueError) as exc:  # fsspec: unknown protocol, or its package is not installed
        raise UserError(f"config key {key}: cannot open {pattern!r} ({str(exc).splitlines()[0]}): use a path, or "
                        "install the fsspec filesystem for that URL scheme") from None
    except FileNotFoundError:
        infos = []
    except Exception as exc:  # network, auth and listing errors come in many types; name the URL either way
        raise UserError(f"config key {key}: could not list {pattern!r} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}): check the URL, the network and "
                        "credentials (HF_TOKEN for a private hub dataset)") from None
    return [RemoteFile(fs.unstrip_protocol(info["name"]), int(info.get("size") or 0))
            for info in infos if info.get("type") == "file"]


def file_size(file: DataFile) -> int:
    return file.size if isinstance(file, RemoteFile) else file.stat().st_size


def open_binary(file: DataFile) -> IO[bytes]:
    """A binary reader for a local file or a URL (fsspec reads remote files in blocks, on demand)."""
    if isinstance(file, RemoteFile):
        import fsspec

        return fsspec.open(file.url, "rb").open()
    return open(file, "rb")


def require_local(files: list[DataFile], key: str, why: str) -> list[Path]:
    """Refuse URLs where the work needs local files (prepare hashes and memory-maps them)."""
    remote = [f for f in files if isinstance(f, RemoteFile)]
    if remote:
        raise UserError(f"config key {key}: {remote[0]} is a URL but {why} reads local files: download it first "
                        "(e.g. `hf download ORG/NAME --repo-type dataset --local-dir data/`) or use data.format=stream")
    return files  # type: ignore[return-value]
