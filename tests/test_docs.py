"""The README documents every config key and the commands it promises."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gpt2dist.config import RunConfig

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def dotted_keys(obj=None, prefix: str = "") -> list[str]:
    obj = RunConfig() if obj is None else obj
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        keys += dotted_keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name]
    return keys


def test_every_config_key_is_in_the_readme():
    missing = [key for key in dotted_keys() if f"`{key}`" not in README]
    assert not missing, f"README config reference lacks {missing}"


def test_readme_gives_the_two_setup_commands():
    assert "pip install torch==2.13.0 && pip install -e . && gpt2dist demo" in README
    assert 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest' in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest" in ci and "torch==2.13.0" in ci
