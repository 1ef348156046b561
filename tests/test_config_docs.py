"""Every setting is declared once: the example YAMLs, `edge_ad config show` and the CLI flags come from the
dataclasses, and no default value is written again in another declaration."""

from __future__ import annotations

import ast
import dataclasses
import difflib
from pathlib import Path

import pytest
import yaml

from edge_ad import config_cli, configdoc
from edge_ad.cli import build_parser, main
from edge_ad.deploy.pipeline import ExportOptions

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "edge_ad"
SCHEMAS = sorted(config_cli.SCHEMAS)
TRIVIAL = (None, True, False, 0, 1, -1, "")  # too common to mean one setting (off, none, empty, one)
SHARED_BY_DESIGN = {  # (setting name, value) -> why two declarations legitimately hold the same literal
    ("host", "127.0.0.1"): "web.host and opcua.host: two servers, each binding loopback by default",
}


@pytest.mark.parametrize("schema", sorted(config_cli.GENERATED))
def test_committed_examples_are_generated_from_the_declarations(schema):
    path = config_cli.GENERATED[schema]
    want, have = config_cli.example(schema), path.read_text()
    diff = "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True), "committed", "generated", n=1))
    assert have == want, (f"{path.relative_to(ROOT)} differs from the dataclass declarations; regenerate it with\n"
                          f"    {config_cli.regenerate_command(schema)}\n(a new setting: give its field a help text, "
                          f"opt(default, help) or a trailing comment, then regenerate)\n{diff[:4000]}")


def test_generated_station_example_loads_to_the_defaults_plus_its_examples():
    from edge_ad.station.config import StationConfig, station_config_from_dict

    raw = yaml.safe_load(config_cli.example("station"))
    cfg = station_config_from_dict(raw)
    want = StationConfig()
    for key, value in config_cli.STATION_EXAMPLES.items():
        *parents, leaf = key.split(".")
        node = want
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, value)
    assert cfg == want


def test_generated_recipe_loads_to_the_builtin_defaults():
    from edge_ad.calibrate.recipe import Recipe, recipe_from_dict

    assert recipe_from_dict(yaml.safe_load(config_cli.example("recipe"))).to_dict() == Recipe().to_dict()


@pytest.mark.parametrize("schema", SCHEMAS)
def test_every_setting_has_help(schema):
    rows = config_cli.SCHEMAS[schema][0]()
    assert configdoc.missing_help(rows) == [], ("settings without help: declare them with opt(default, help) or a "
                                                "trailing `# help` comment on the field")


def test_every_export_option_has_help():
    rows = configdoc.settings(ExportOptions())
    assert configdoc.missing_help(rows) == []


@pytest.mark.parametrize("flag, schema", [([], "model"), (["--station"], "station"), (["--recipe"], "recipe")])
def test_config_show_prints_every_key_its_default_and_help(flag, schema, capsys):
    assert main(["config", "show", *flag]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [s for s in config_cli.SCHEMAS[schema][0]() if not s.section]
    assert len(rows) > 10
    for s in rows:
        (line,) = [ln for ln in lines if ln.split(" ", 1)[0] == s.key]
        assert configdoc.yaml_value(s.default) in line and s.help in line, line


def test_help_comes_from_metadata_or_the_trailing_comment_with_continuation_lines():
    @dataclasses.dataclass
    class Demo:
        """A demo section."""

        a: int = 3  # the first line
        #             and its continuation
        b: str = configdoc.opt("x # not a comment", "from the metadata")
        c: float = 0.5

    rows = {s.key: s for s in configdoc.settings(Demo())}
    assert rows["a"].help == "the first line and its continuation"
    assert rows["b"].help == "from the metadata" and rows["b"].default == "x # not a comment"
    assert rows["c"].help == "" and configdoc.missing_help(list(rows.values())) == ["c"]
    text = configdoc.example_yaml(list(rows.values()), "header", {"c": 2.5})
    assert "c: 2.5" in text and "example (default 0.5)" in text and yaml.safe_load(text) == {"a": 3, "b": "x # not a comment", "c": 2.5}


def test_export_flags_are_the_export_options():
    args = build_parser().parse_args(["export", "m.pt"])
    assert args.func.__name__ == "cmd_export"
    assert configdoc.options_from_args(ExportOptions, args) == ExportOptions()
    args = build_parser().parse_args(["export", "m.onnx", "--format", "engine", "--dla", "1", "--calib-images", "32",
                                      "--exclude", "a", "b", "--check-only"])
    opts = configdoc.options_from_args(ExportOptions, args)
    assert (opts.format, opts.dla, opts.calib_images, opts.exclude, opts.check_only) == ("engine", 1, 32, ["a", "b"], True)


# ----------------------------------------------------------------------------- one declaration per default value


def _literal(node: ast.AST | None):
    """(True, value) for a literal default (also inside field(default=...) / opt(...)), else (False, None)."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("opt", "_opt", "field"):
        node = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "default"), None)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)) and not isinstance(node.value, bool):
        if node.value not in TRIVIAL:
            return True, node.value
    return False, None


def declarations(pkg: Path = PKG) -> list[tuple[str, object, str]]:
    """(name, literal value, where) for every default written in edge_ad/: dataclass fields, function parameters,
    argparse `default=`, module constants (DEFAULT_X counts as x) and the keys of module-level dicts."""
    out = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg.parent)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            found = []
            if isinstance(node, ast.ClassDef):
                found = [(b.target.id, b.value, f"{node.name}.{b.target.id}") for b in node.body
                         if isinstance(b, ast.AnnAssign) and isinstance(b.target, ast.Name)]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                pos = a.posonlyargs + a.args
                pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults)) + list(zip(a.kwonlyargs, a.kw_defaults))
                found = [(arg.arg, d, f"{node.name}({arg.arg}=)") for arg, d in pairs]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                flags = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
                dest = next((k.value.value for k in node.keywords if k.arg == "dest" and isinstance(k.value, ast.Constant)),
                            flags[0][2:].replace("-", "_") if flags else None)
                found = [(dest, k.value, f"--{dest} default") for k in node.keywords if k.arg == "default" and dest]
            for name, value, what in found:
                ok, v = _literal(value)
                if ok:
                    out.append((name, v, f"{rel}:{getattr(value, 'lineno', node.lineno)} {what}"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                ok, v = _literal(node.value)
                if ok and name.isupper():
                    out.append((name.lower().removeprefix("default_"), v, f"{rel}:{node.lineno} {name}"))
                if isinstance(node.value, ast.Dict):
                    for k, val in zip(node.value.keys, node.value.values):
                        ok, v = _literal(val)
                        if ok and isinstance(k, ast.Constant) and isinstance(k.value, str):
                            out.append((k.value.rsplit(".", 1)[-1], v, f"{rel}:{node.lineno} {name}[{k.value!r}]"))
    return out


def schema_settings() -> list[configdoc.Setting]:
    rows = [s for schema in SCHEMAS for s in config_cli.SCHEMAS[schema][0]()]
    return rows + configdoc.settings(ExportOptions())


def _same(a: object, b: object) -> bool:
    return type(a) in (int, float) and type(b) in (int, float) and a == b or type(a) is type(b) and a == b


def test_each_default_value_is_written_in_exactly_one_declaration():
    """A setting's default literal (1024 MiB of workspace, 128 calibration images, ...) appears once: the other
    places (the CLI, function parameters, calibrate's recipe) name that declaration instead of repeating the number."""
    decls = declarations()
    twice = {}
    for s in schema_settings():
        if s.section or isinstance(s.default, (bool, list, dict, tuple)) or s.default in TRIVIAL:
            continue
        name = s.key.rsplit(".", 1)[-1]
        section = s.key.rsplit(".", 2)[-2] if "." in s.key else ""
        names = {name, f"{section}_{name}"} if section else {name}
        hits = sorted({where for n, v, where in decls if n in names and _same(v, s.default)})
        if len(hits) > 1 and (name, s.default) not in SHARED_BY_DESIGN:
            twice[f"{s.key} = {s.default!r}"] = hits
    assert not twice, "default values written in more than one declaration (keep one, name it elsewhere):\n" + \
        "\n".join(f"  {k}: {', '.join(v)}" for k, v in sorted(twice.items()))


def test_the_duplicate_finder_finds_a_written_twice_default(tmp_path):
    """The check above can fail: a second literal 1024 for workspace_mb (as the CLI once had) is reported."""
    fake = tmp_path / "edge_ad"
    fake.mkdir()
    (fake / "a.py").write_text("from dataclasses import dataclass\n\n@dataclass\nclass EngineConfig:\n"
                               "    workspace_mb: int = 1024\n")
    (fake / "b.py").write_text("def build(p):\n    p.add_argument('--workspace-mb', type=int, default=1024)\n")
    found = [(n, v) for n, v, _ in declarations(fake)]
    assert found.count(("workspace_mb", 1024)) == 2
