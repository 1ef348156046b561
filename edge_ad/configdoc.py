"""Every setting as its dataclass declares it (key, default, help), for `edge_ad config show` and the example YAMLs.

A setting is declared once: a dataclass field with its help, either as field metadata (`opt(default, help)`) or as
the trailing comment on its line (comment-only lines right below continue it); a section's help is its class
docstring. Everything a user reads about defaults is rendered from that declaration, so no hand-kept copy can drift.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

COMMENT_COLUMN = 32  # the example YAMLs' help comments start in this column when the line is shorter
LINE_WIDTH = 118  # longer help wraps onto comment lines below, in the same column
LONG_VALUE = 24  # a line this much longer than COMMENT_COLUMN gets its help on the lines above instead
INDENT = "  "


@dataclass(frozen=True)
class Setting:
    """One key of a config: dotted path, default value and help text ('' for a section heading)."""

    key: str
    default: Any
    help: str
    section: bool = False


def opt(default: Any, help: str) -> Any:
    """A dataclass field with its help text in the metadata (for defaults a trailing comment cannot carry)."""
    return dataclasses.field(default=default, metadata={"help": help})


@lru_cache(maxsize=None)
def field_help(cls: type) -> dict[str, str]:
    """Each field's help, read from the trailing comment on its declaration (plus comment lines just below)."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):  # no source (frozen app): no help, the keys and defaults still show
        return {}
    src = textwrap.dedent("".join(lines))
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    src_lines = src.splitlines()
    out: dict[str, str] = {}
    body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        line = node.end_lineno or node.lineno
        parts = [comments[line]] if line in comments else []
        nxt = line + 1
        while parts and nxt <= len(src_lines) and src_lines[nxt - 1].strip().startswith("#"):
            parts.append(comments[nxt])
            nxt += 1
        out[node.target.id] = " ".join(p for p in parts if p)
    return out


def section_help(cls: type) -> str:
    """The first paragraph of a section's class docstring, on one line ('' without one)."""
    doc = cls.__doc__ or ""
    if doc.startswith(f"{cls.__name__}("):  # dataclasses invent a signature docstring: not help
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def settings(obj: Any, prefix: str = "") -> list[Setting]:
    """Every key of a config instance, depth first in declaration order, with its value and help."""
    helps = field_help(type(obj))
    out: list[Setting] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.append(Setting(key, None, helps.get(f.name) or section_help(type(value)), section=True))
            out += settings(value, key + ".")
        else:
            out.append(Setting(key, value, f.metadata.get("help") or helps.get(f.name, "")))
    return out


def missing_help(rows: list[Setting]) -> list[str]:
    """Keys declared without help (every setting should say what it does)."""
    return [s.key for s in rows if not s.help and not s.section]


def yaml_value(value: Any) -> str:
    """A value as one line of YAML flow style (what a user would type)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16, sort_keys=False).strip().removesuffix("\n...")


def show(rows: list[Setting]) -> str:
    """`edge_ad config show`: one line per key: dotted key, default, help; a heading per section."""
    width = max(len(s.key) for s in rows if not s.section)
    lines = []
    for s in rows:
        if s.section:
            lines.append(f"\n[{s.key}]" + (f"  {s.help}" if s.help else ""))
        else:
            lines.append(f"{s.key:<{width}}  {yaml_value(s.default):<14}  {s.help}".rstrip())
    return "\n".join(lines).lstrip("\n") + "\n"


def example_yaml(rows: list[Setting], header: str, examples: dict[str, Any] | None = None,
                 order: list[str] | None = None) -> str:
    """A commented YAML file of every key at its default; `examples` (dotted key -> value) are shown instead,
    marked "example" with the default named. `order` lists top-level sections first (the rest follow)."""
    examples = dict(examples or {})
    unknown = sorted(set(examples) - {s.key for s in rows})
    if unknown:
        raise KeyError(f"examples for keys the config does not have: {', '.join(unknown)}")
    tops = [s.key for s in rows if "." not in s.key]
    ranked = {k: i for i, k in enumerate([k for k in order or [] if k in tops] + [k for k in tops if k not in (order or [])])}
    rows = sorted(rows, key=lambda s: ranked[s.key.split(".")[0]])  # stable: keeps declaration order inside
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()] + [""]
    for s in rows:
        depth = s.key.count(".")
        name = s.key.rsplit(".", 1)[-1]
        if s.section:
            lines += ([""] if lines[-1] else []) + [_commented(f"{INDENT * depth}{name}:", s.help)]
            continue
        if s.key in examples:
            value, note = examples[s.key], f"example (default {yaml_value(s.default)})"
            comment = f"{note}; {s.help}" if s.help else note
        else:
            value, comment = s.default, s.help
        if isinstance(value, dict) and value:
            lines.append(_commented(f"{INDENT * depth}{name}:", comment))
            lines += _mapping(value, depth + 1)
        else:
            lines.append(_commented(f"{INDENT * depth}{name}: {yaml_value(value)}", comment))
    return "\n".join(lines) + "\n"


def _mapping(value: dict, depth: int) -> list[str]:
    out = []
    for k, v in value.items():
        if isinstance(v, dict) and v:
            out.append(f"{INDENT * depth}{k}:")
            out += _mapping(v, depth + 1)
        else:
            out.append(f"{INDENT * depth}{k}: {yaml_value(v)}")
    return out


def _commented(text: str, comment: str) -> str:
    """`text  # comment`, the comment wrapped at LINE_WIDTH onto comment-only lines in the same column."""
    if not comment:
        return text
    if len(text) > COMMENT_COLUMN + LONG_VALUE:  # a long value: its help goes on comment lines above it
        indent = text[:len(text) - len(text.lstrip())]
        return "\n".join([f"{indent}# {p}" for p in textwrap.wrap(comment, LINE_WIDTH - len(indent) - 2)] + [text])
    column = max(COMMENT_COLUMN, len(text) + 2)
    parts = textwrap.wrap(comment, LINE_WIDTH - column - 2)
    lines = [f"{text:<{column - 1}} # {parts[0]}"] + [f"{'':<{column - 1}} #   {p}" for p in parts[1:]]
    return "\n".join(lines)


def add_options(parser: Any, cls: type, names: list[str], **extra: dict) -> None:
    """argparse flags for dataclass fields (--calib-images for calib_images): default, type and help come from the
    field's declaration; `extra[name]` adds what only the command line has (choices, metavar)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    for name in names:
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        text = f.metadata.get("help") or helps.get(name, "")
        kw: dict[str, Any] = {"dest": name, "default": default, **extra.get(name, {})}
        tp = hints[name]
        union = typing.get_origin(tp) in (typing.Union, types.UnionType)
        base = next(a for a in typing.get_args(tp) if a is not type(None)) if union else tp  # X | None -> X
        if tp is bool:
            kw["action"] = "store_true"
        elif typing.get_origin(base) is list:
            kw.update(nargs="*", type=typing.get_args(base)[0])
        else:
            kw["type"] = base
        if default not in (None, False, "", []):
            text += f" (default: {default})"
        parser.add_argument("--" + name.replace("_", "-"), help=text.replace("%", "%%"), **kw)


def options_from_args(cls: type, args: Any, names: list[str] | None = None) -> Any:
    """The dataclass built from parsed flags that add_options declared (fields not named keep their defaults)."""
    names = names if names is not None else [f.name for f in dataclasses.fields(cls)]
    return cls(**{n: getattr(args, n) for n in names if hasattr(args, n)})
