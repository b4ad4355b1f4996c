"""The YAML loader for data.yaml files, which come from uploads and users (docs/security.md).

PyYAML's safe loader builds only plain data, but it follows aliases: a "billion laughs" file of a
few hundred bytes (``a: &a [x, x, ...]``, ``b: &b [*a, *a, ...]`` nine levels deep) loads as a
small graph of shared lists that becomes ~10^9 items as soon as anything walks it (a JSON column,
a response, a diff). A data.yaml has no use for anchors, so aliases are refused outright."""

from __future__ import annotations

from typing import Any

import yaml


class NoAliasSafeLoader(yaml.SafeLoader):
    """SafeLoader (the pure-Python one: the C loader composes nodes in C) that refuses ``*alias``."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in data.yaml", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Plain data from ``text``; yaml.YAMLError on bad YAML or an alias."""
    return yaml.load(text, Loader=NoAliasSafeLoader)  # noqa: S506 - a SafeLoader subclass
