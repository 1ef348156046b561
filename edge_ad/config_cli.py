"""`edge_ad config show|example`: every setting of each config with its default and help, and the example YAMLs.

Both are rendered from the dataclass declarations (edge_ad.configdoc), so `jetson/station.example.yaml` and the
packaged default recipe are generated files: tests/test_config_docs.py fails when a committed one differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from edge_ad import configdoc

ROOT = Path(__file__).resolve().parents[1]

STATION_HEADER = """\
/etc/edge_ad/station.yaml: one inspection station. Every key is optional; the values shown are
the defaults unless marked "example". Unknown keys are an error (typos do not pass silently).
Schema: edge_ad/station/config.py. Generated: edge_ad config example --station > jetson/station.example.yaml"""
STATION_EXAMPLES = {  # values that make the example read like a real station (each marked "example" in the file)
    "station": "line3-cam1",
    "part": "bottle",
    "mqtt.enabled": True,
    "mqtt.host": "broker.plant.local",
    "mqtt.port": 8883,
    "mqtt.username": "line3",
    "mqtt.password_env": "EDGE_AD_MQTT_PASSWORD",
    "mqtt.tls": True,
    "mqtt.ca_file": "/etc/edge_ad/ca.crt",
    "gpio.enabled": True,
    "gpio.backend": "jetson",
}

RECIPE_HEADER = """\
Default calibration recipe: calibrate picks the input settings and the model for the part itself.
Used by `edge_ad calibrate` when no --recipe is given; identical to the built-in defaults.
It trains every select: candidate, judges each on held-out good images and synthetic defects, keeps the best,
deploys the fastest graph within the accuracy bounds and writes a readiness verdict (ready / not ready, why).
Every key is optional (a missing key keeps its default) and checked: a typo is an error.
data.root and train.out_dir are set by calibrate (its work folder); do not put them here.
Schemas: edge_ad/calibrate/recipe.py, edge_ad/config.py.
Generated: edge_ad config example --recipe > edge_ad/calibrate/recipes/default.yaml"""
RECIPE_ORDER = ["capture", "quality", "split", "auto", "select", "readiness", "data", "model", "augment", "train",
                "prune", "scoring", "quantize", "engine", "report"]
RECIPE_NOT_SET = ("data.root", "train.out_dir")  # calibrate sets them (its work folder)

MODEL_HEADER = """\
edge_ad model config (edge_ad train --config FILE): every key is optional and checked.
Schema: edge_ad/config.py. Generated: edge_ad config example"""


def model_settings() -> list[configdoc.Setting]:
    """Every key of an `edge_ad train` config."""
    from edge_ad.config import Config

    return configdoc.settings(Config())


def station_settings() -> list[configdoc.Setting]:
    """Every key of a station YAML."""
    from edge_ad.station.config import StationConfig

    return configdoc.settings(StationConfig())


def recipe_settings() -> list[configdoc.Setting]:
    """Every key of a calibration recipe at calibrate's defaults: model sections, calibration sections, prune.enabled."""
    from edge_ad.calibrate.recipe import Recipe

    recipe = Recipe()
    rows = [s for s in configdoc.settings(recipe.calib) + configdoc.settings(recipe.config) if s.key not in RECIPE_NOT_SET]
    at = next(i for i, s in enumerate(rows) if s.key == "prune") + 1
    text = configdoc.field_help(Recipe)["prune"].removeprefix("`prune.enabled`: ")
    rows.insert(at, configdoc.Setting("prune.enabled", recipe.prune, text))
    return rows


SCHEMAS: dict[str, tuple[Callable[[], list[configdoc.Setting]], str, dict, list[str]]] = {
    "model": (model_settings, MODEL_HEADER, {}, []),
    "station": (station_settings, STATION_HEADER, STATION_EXAMPLES, []),
    "recipe": (recipe_settings, RECIPE_HEADER, {}, RECIPE_ORDER),
}
GENERATED = {"station": ROOT / "jetson" / "station.example.yaml",  # committed files rendered by `config example`
             "recipe": ROOT / "edge_ad" / "calibrate" / "recipes" / "default.yaml"}


def example(schema: str) -> str:
    """The commented example YAML of one config."""
    rows, header, examples, order = SCHEMAS[schema]
    return configdoc.example_yaml(rows(), header, examples, order)


def regenerate_command(schema: str) -> str:
    """The command that rewrites a committed example file."""
    flag = f" --{schema}" if schema != "model" else ""
    return f"edge_ad config example{flag} > {GENERATED[schema].relative_to(ROOT)}"


def _schema(args: argparse.Namespace) -> str:
    return "station" if args.station else "recipe" if args.recipe else "model"


def cmd_show(args: argparse.Namespace) -> int:
    sys.stdout.write(configdoc.show(SCHEMAS[_schema(args)][0]()))
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example(_schema(args)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `config show` and `config example` to the edge_ad command line."""
    p = sub.add_parser("config", help="every setting with its default and help; example YAML files",
                       description="Settings are declared once, in dataclasses with their help; these commands print "
                                   "them. Model config (edge_ad train) by default, --station for station.yaml, "
                                   "--recipe for calibration recipes.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    for name, func, text in (("show", cmd_show, "print every key, its default and its help"),
                             ("example", cmd_example, "print a commented YAML file of every key at its default")):
        q = csub.add_parser(name, help=text, description=text)
        which = q.add_mutually_exclusive_group()
        which.add_argument("--station", action="store_true", help="the station config (edge_ad run --config)")
        which.add_argument("--recipe", action="store_true", help="a calibration recipe (edge_ad calibrate --recipe)")
        q.set_defaults(func=func)
