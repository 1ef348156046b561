"""JetPack 6 ships Python 3.10: every module must parse as 3.10 and import nothing newer from the stdlib."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("edge_ad", "tools", "benchmarks", "tests")
TARGET = (3, 10)

# Standard-library modules and names added after 3.10 (first version in the comment).
NEW_MODULES = {"tomllib", "wsgiref.types"}  # 3.11
NEW_NAMES = {
    "typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "Required",
               "NotRequired", "dataclass_transform", "TypeVarTuple", "Unpack", "override", "TypeAliasType",
               "get_overloads", "clear_overloads", "ReadOnly", "TypeIs", "get_protocol_members", "is_protocol"},
    "enum": {"StrEnum", "ReprEnum", "EnumCheck", "FlagBoundary", "verify", "member", "nonmember", "global_enum",
             "property", "show_flag_values"},
    "datetime": {"UTC"},
    "asyncio": {"TaskGroup", "timeout", "timeout_at", "Timeout", "Runner", "Barrier", "BrokenBarrierError",
                "eager_task_factory", "QueueShutDown"},
    "contextlib": {"chdir"},
    "hashlib": {"file_digest"},
    "itertools": {"batched"},
    "math": {"cbrt", "exp2", "sumprod", "fma"},
    "operator": {"call"},
    "logging": {"getLevelNamesMapping", "getHandlerByName", "getHandlerNames"},
    "re": {"NOFLAG", "PatternError"},
    "inspect": {"markcoroutinefunction", "BufferFlags"},
    "os": {"process_cpu_count"},
    "warnings": {"deprecated"},
    "copy": {"replace"},
    "pathlib": {"UnsupportedOperation"},
}


def python_files() -> list[Path]:
    files = []
    for folder in FOLDERS:
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def newer_stdlib_uses(tree: ast.AST) -> list[str]:
    """'module' or 'module.name' for every post-3.10 stdlib module or name the code imports or touches."""
    found = []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in NEW_MODULES:
                    found.append(alias.name)
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in NEW_MODULES:
                found.append(node.module)
            for alias in node.names:
                if f"{node.module}.{alias.name}" in NEW_MODULES or alias.name in NEW_NAMES.get(node.module, ()):
                    found.append(f"{node.module}.{alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id)
            if module and node.attr in NEW_NAMES.get(module, ()):
                found.append(f"{module}.{node.attr}")
    return sorted(set(found))


def test_finds_python_files():
    names = {p.relative_to(ROOT).as_posix() for p in python_files()}
    assert "edge_ad/runtime/tensorrt.py" in names and "tests/test_py310.py" in names


@pytest.mark.parametrize("path", python_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_parses_as_python_310_without_newer_stdlib(path: Path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path), feature_version=TARGET)
    assert newer_stdlib_uses(tree) == [], f"{path.name} uses stdlib newer than Python 3.10"


def test_detector_catches_newer_code():
    with pytest.raises(SyntaxError):
        ast.parse("try:\n    pass\nexcept* ValueError:\n    pass\n", feature_version=TARGET)
    with pytest.raises(SyntaxError):
        ast.parse("type Alias = int\n", feature_version=TARGET)
    sample = ast.parse(
        "import tomllib\nfrom typing import Self\nimport datetime as dt\nimport enum\n"
        "now = dt.datetime.now(dt.UTC)\nclass C(enum.StrEnum): pass\n"
    )
    assert newer_stdlib_uses(sample) == ["datetime.UTC", "enum.StrEnum", "tomllib", "typing.Self"]
    assert newer_stdlib_uses(ast.parse("import datetime\nx = datetime.timezone.utc\n")) == []
