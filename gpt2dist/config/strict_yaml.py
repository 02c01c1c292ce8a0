"""YAML that refuses a key given twice in one mapping.

PyYAML's SafeLoader keeps the last of two equal keys without a word, so a second `train:` section
silently replaces the first (YAML 1.2 says keys must be unique; PyYAML does not enforce it:
https://github.com/yaml/pyyaml/issues/165). The loader below walks the composed node tree before
building Python objects and names the dotted key and both lines. Merge keys (`<<: *base`) may
still be overridden, as the YAML merge spec allows.
"""

from __future__ import annotations

from typing import Any

import yaml

from gpt2dist.errors import UserError


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader whose mappings refuse a repeated key (the error names it and both lines)."""

    # (names unlike the Reader/Scanner attributes: `prefix` is a Reader method)
    source_name = "YAML"  # how an error names the text: "config file run.yaml", "override 'model=...'"
    key_prefix = ""  # the dotted key the document sits under (an override's value)

    def construct_document(self, node: yaml.Node) -> Any:
        check_unique_keys(node, self.key_prefix, self.source_name)
        return super().construct_document(node)


def check_unique_keys(node: yaml.Node, prefix: str, where: str) -> None:
    seen: set[int] = set()
    stack = [(node, prefix)]
    while stack:
        current, path = stack.pop()
        if id(current) in seen:  # anchors/aliases share nodes (and may even form cycles)
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            first_line: dict[tuple[str, str], int] = {}
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    ident, line = (key.tag, key.value), key.start_mark.line + 1
                    if ident in first_line:
                        lines = f" (lines {first_line[ident]} and {line})" if line != first_line[ident] else ""
                        raise UserError(f"{where}: key {path}{key.value} appears twice{lines}; the second would "
                                        "silently replace the first: keep one")
                    first_line[ident] = line
                    stack.append((value, f"{path}{key.value}."))
                else:
                    stack.append((value, path))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((item, path) for item in current.value)


def safe_load(text: str, where: str = "YAML", prefix: str = "") -> Any:
    """yaml.safe_load, but a key repeated in one mapping is a UserError naming `where`, the key and both lines."""
    loader = UniqueKeyLoader(text)
    loader.source_name, loader.key_prefix = where, prefix
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
