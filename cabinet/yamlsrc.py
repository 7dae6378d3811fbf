"""YAML with line numbers: plain Python data plus the line of every key and list item.

`load_yaml(path)` composes the file with PyYAML's SafeLoader (no custom tags, no code), walks the
node tree itself and records, for each location `('slots', 3, 'sku')`, the 1-based line of that
value. Validators (pydantic or the cross-field checks) report a location; `Doc.line(loc)` turns it
into a line, falling back to the nearest enclosing node. Duplicate keys, several documents in one
file, non-string keys, unreadable bytes and syntax errors are `FormatError`s with the line.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import yaml

from cabinet.errors import FormatError

Loc = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Doc:
    """The parsed file: `data` (dicts, lists, scalars) and `lines` (location -> line)."""

    path: Path
    data: Any
    lines: dict[Loc, int]
    text: str

    def line(self, loc: Sequence[str | int] = ()) -> int | None:
        loc = tuple(loc)
        while True:
            if loc in self.lines:
                return self.lines[loc]
            if not loc:
                return None
            loc = loc[:-1]

    def error(self, loc: Sequence[str | int], message: str, *, value: Any = None,
              with_value: bool = True) -> FormatError:
        """A FormatError at `loc`; the value defaults to what the file holds there."""
        if with_value and value is None:
            value = self.get(loc)
        if with_value:
            return FormatError(self.path, self.line(loc), tuple(loc), value, message)
        return FormatError(self.path, self.line(loc), tuple(loc), message=message)

    def get(self, loc: Sequence[str | int], default: Any = None) -> Any:
        node = self.data
        for part in loc:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return default
        return node


def _scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode, path: Path) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        raise FormatError(path, node.start_mark.line + 1, None,
                          message=f"bad YAML value {node.value!r}: {e}") from e


def _walk(loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, lines: dict[Loc, int],
          path: Path, depth: int = 0) -> Any:
    if depth > 64:
        raise FormatError(path, node.start_mark.line + 1, None, message="nesting too deep")
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(loader, key_node, path) if isinstance(key_node, yaml.ScalarNode) \
                else None
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise FormatError(path, key_node.start_mark.line + 1, None,
                                  message=f"a key must be a plain word, not {key_node.value!r}")
            key = str(key)
            if key in out:
                raise FormatError(path, key_node.start_mark.line + 1, loc + (key,),
                                  message="this key appears twice in the same block; keep one")
            lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = _walk(loader, value_node, loc + (key,), lines, path, depth + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(loader, item, loc + (i,), lines, path, depth + 1)
                for i, item in enumerate(node.value)]
    return _scalar(loader, node, path)


def parse_yaml(text: str, path: str | Path) -> Doc:
    """Parse YAML text that came from `path` (used in messages)."""
    path = Path(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.composer.ComposerError as e:
        mark = e.problem_mark or e.context_mark
        raise FormatError(path, mark.line + 1 if mark else None, None,
                          message=f"{e.problem or e}; a file holds one YAML document") from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or "malformed YAML"
        if e.context:
            problem = f"{e.context}, {problem}"
        ctx = e.context_mark
        if ctx is not None and mark is not None and ctx.line != mark.line:
            problem += f" (the block opened at line {ctx.line + 1})"
        raise FormatError(path, mark.line + 1 if mark else None, None,
                          message=f"malformed YAML: {problem}") from e
    except yaml.YAMLError as e:
        raise FormatError(path, None, None, message=f"malformed YAML: {e}") from e
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if node is None:
        return Doc(path, None, {(): 1}, text)
    data = _walk(loader, node, (), lines, path)
    return Doc(path, data, lines, text)


def read_text(path: str | Path, what: str) -> str:
    """The file's text; a missing, unreadable or non-UTF-8 file is a one-line FormatError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FormatError(path, None, None, message=f"{what} file not found") from None
    except IsADirectoryError:
        raise FormatError(path, None, None, message=f"is a directory, not a {what} file") \
            from None
    except OSError as e:
        raise FormatError(path, None, None,
                          message=f"cannot read the {what} file: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise FormatError(path, line, None, message="not UTF-8 text") from None


def load_yaml(path: str | Path, what: str = "YAML") -> Doc:
    """Read and parse one YAML file; see the module doc for what is refused."""
    return parse_yaml(read_text(path, what), path)


def pydantic_errors(doc: Doc, exc: Any, prefix: Loc = ()) -> list[FormatError]:
    """Translate a pydantic ValidationError into FormatErrors at the right lines."""
    out = []
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(p for p in err["loc"] if not _is_union_tag(p))
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key; check its spelling against docs/formats.md"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
            ctx = err.get("ctx") or {}
            if "error" in ctx and str(ctx["error"]) not in msg:
                msg = f"{msg}: {ctx['error']}"
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
        if kind == "missing":
            out.append(doc.error(loc, msg, with_value=False))
        else:
            out.append(doc.error(loc, msg, value=doc.get(loc)))
    return out


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the chosen union member ('function-after[...]', 'int', ...) into `loc`
    return isinstance(part, str) and ("[" in part or part in {"int", "str", "float", "bool"})
