"""A bounded, safe YAML loader for specs: PyYAML's SafeLoader with limits checked while the
document is composed, before any Python object is built.

SafeLoader already refuses every tag that could run code (`!!python/...`). On top of it:

- the file is refused unread past MAX_SPEC_BYTES;
- composition stops at MAX_SPEC_DEPTH levels of nesting (PyYAML composes recursively: a spec of
  1,000 `[` would otherwise end in a RecursionError);
- nodes are counted as if every alias were copied out, so an anchor bomb ("billion laughs") stops
  at MAX_SPEC_NODES long before it is expanded by anything downstream (pydantic, torch, repr);
- an alias that refers to its own anchor (`&r {a: *r}`, a cycle) is refused;
- a number longer than MAX_NUMBER_CHARS characters is refused before int()/float() sees it;
- a key given twice in one mapping is refused (YAML says keys are unique; PyYAML keeps the last).
  Keys brought in by a merge (`<<: *defaults`) may be overridden, as YAML's merge rule intends.

Each refusal is a SpecLimitError (a yaml MarkedYAMLError: it carries the line) whose text names the
limit. The pure-Python loader is used on purpose: the C one composes in C, where none of these checks
can be hooked; with the size and node limits its speed does not matter (a few hundred ms at most).
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import MarkedYAMLError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode

# A real spec is well under 10 KB (the bundled ones are ~0.5 KB; a `features:` list of a few thousand
# column names is ~50 KB). The pure-Python YAML parser reads ~50 KB/s on a busy 2-core machine, so
# 256 KiB keeps the worst case to seconds. A bigger file is refused before it is read.
MAX_SPEC_BYTES = 256 * 1024
# The deepest legitimate nesting is a residual block inside a residual block inside model.layers:
# ~10 levels. 64 leaves room and keeps the recursive composer (3 Python frames per level) and the
# recursive validation far from Python's default recursion limit of 1,000.
MAX_SPEC_DEPTH = 64
# Scalars, sequences and mappings, each alias counted as a full copy of what it names. A spec with a
# feature list of a few thousand columns has a few thousand nodes; an anchor bomb of 9 levels of 9
# aliases has 9**9 (387 million). 20,000 stops the bomb while still in the composer (milliseconds).
MAX_SPEC_NODES = 20_000
# The longest number a spec needs is a seed up to 2**32 - 1 (10 digits) or a float at full precision
# (~25 characters). Python refuses to convert integer strings over 4,300 digits (a ValueError traceback
# without this limit); 100 characters leaves room for underscores and exponents.
MAX_NUMBER_CHARS = 100

_MERGE_TAG = "tag:yaml.org,2002:merge"


class SpecLimitError(MarkedYAMLError):
    """A spec that breaks one of the limits above; `limit` names it."""

    def __init__(self, problem: str, mark: Any, limit: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.limit = limit


class _BoundedConstructor(SafeConstructor):
    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:      # unhashable: SafeConstructor says so with its own message
                    break
                if first is not None:
                    raise SpecLimitError(
                        f"duplicate key {_short(key_node.value if hasattr(key_node, 'value') else key)} "
                        f"(first given at line {first.line + 1}); each key may appear once in a mapping",
                        key_node.start_mark, "duplicate keys")
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def _number(self, node: Any) -> None:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise SpecLimitError(f"a number of {len(node.value):,} characters (the number length limit is "
                                 f"{MAX_NUMBER_CHARS})", node.start_mark, "number length")

    def construct_yaml_int(self, node: Any) -> int:
        self._number(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: Any) -> float:
        self._number(node)
        return super().construct_yaml_float(node)


_BoundedConstructor.add_constructor("tag:yaml.org,2002:int", _BoundedConstructor.construct_yaml_int)
_BoundedConstructor.add_constructor("tag:yaml.org,2002:float", _BoundedConstructor.construct_yaml_float)
_BoundedConstructor.add_constructor("tag:yaml.org,2002:map", _BoundedConstructor.construct_yaml_map)


class BoundedSafeLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
                        _BoundedConstructor, yaml.resolver.Resolver):
    """SafeLoader plus the depth, node-count, alias-cycle, number-length and duplicate-key limits."""

    def __init__(self, stream: Any):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _BoundedConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._open: list[list[int]] = []     # per node being composed: [expanded size so far, tallest child]
        self._done: dict[int, tuple[int, int]] = {}   # id(node) -> (expanded size, height), once complete

    def _add(self, size: int, height: int, mark: Any) -> None:
        """Account a complete child (composed, or an alias standing for a copy) to the node being composed."""
        if not self._open:
            return
        top = self._open[-1]
        top[0] += size
        top[1] = max(top[1], height)
        if len(self._open) + height > MAX_SPEC_DEPTH:
            raise SpecLimitError(f"nesting deeper than {MAX_SPEC_DEPTH} levels, aliases counted as copies "
                                 f"(the spec depth limit)", mark, "nesting depth")
        if sum(c[0] for c in self._open) > MAX_SPEC_NODES:
            raise SpecLimitError(f"more than {MAX_SPEC_NODES:,} values, aliases counted as copies "
                                 f"(the spec value-count limit; an anchor bomb?)", mark, "node count")

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and id(node) not in self._done:
                raise SpecLimitError(f"the alias *{event.anchor[:40]} refers to a node that contains it "
                                     f"(a cycle: the spec alias limit)", event.start_mark, "alias cycle")
            node = super().compose_node(parent, index)   # an undefined alias: the composer's own error
            self._add(*self._done[id(node)], event.start_mark)
            return node
        mark = self.peek_event().start_mark
        if len(self._open) >= MAX_SPEC_DEPTH:
            raise SpecLimitError(f"nesting deeper than {MAX_SPEC_DEPTH} levels (the spec depth limit)", mark,
                                 "nesting depth")
        self._open.append([1, 0])
        try:
            node = super().compose_node(parent, index)
        finally:
            size, tallest = self._open.pop()
        self._done[id(node)] = (size, tallest + 1)
        self._add(size, tallest + 1, mark)
        return node


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def load(text: str) -> Any:
    """One YAML document from `text` within the limits (SpecLimitError / yaml.YAMLError otherwise)."""
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
