"""`edge_ad parts publish` and `edge_ad fleet init|rollout|status|rollback|revoke|rotate-key|resign|web`: registered
into edge_ad.cli via register(). Settings come from plant.yaml (edge_ad.fleet.config), the flags override them."""

from __future__ import annotations

import argparse
import json

from edge_ad.config import parse_overrides

FLEET_HELP = """\
A plant of stations: bundles are published once into a signed repository (S3 or a folder a web server serves),
stations follow the signed desired state, a rollout goes group by group (canaries first) and rolls back by itself.

examples:
  edge_ad fleet init --plant plant.yaml --root-key /media/usb/root.pem
  edge_ad parts publish flange --version 4 --plant plant.yaml
  edge_ad fleet rollout flange --version 4 --plant plant.yaml
  edge_ad fleet status --plant plant.yaml
  edge_ad fleet rollback flange --version 3 --plant plant.yaml
"""


def _plant(args: argparse.Namespace):
    """plant.yaml with the command line's flags on top."""
    from edge_ad.fleet.config import load_plant_config

    ov = parse_overrides(getattr(args, "set", None))
    for flag, key in (("to", "repository"), ("s3_endpoint", "s3_endpoint"), ("keys", "keys_dir"),
                      ("root_key", "root_key"), ("parts_root", "parts_dir")):
        if getattr(args, flag, None):
            ov[key] = getattr(args, flag)
    if getattr(args, "broker", None):
        from edge_ad.config import parse_host_port

        ov["broker.host"], ov["broker.port"] = parse_host_port(args.broker)
    return load_plant_config(args.plant, ov)


def _store(plant):
    from edge_ad.fleet.store import open_store

    return open_store(plant.repository, plant.s3_endpoint)


def _view(plant):
    from edge_ad.fleet.status import FleetView

    return FleetView(plant.broker)


def cmd_init(args: argparse.Namespace) -> int:
    from edge_ad.fleet.repo import META, init_repo

    plant = _plant(args)
    store = _store(plant)
    if hasattr(store, "ensure_bucket"):
        store.ensure_bucket()
    init_repo(store, plant.keys_dir, plant.root_key, plant.expiry)
    print(f"repository {store.describe()} created; online keys in {plant.keys_dir}, root key {plant.root_key} "
          f"(keep it off-line). Give each station {store.describe()}/{META}/1.root.json as fleet.trusted_root.")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from edge_ad.fleet.publish import publish_bundle

    plant = _plant(args)
    res = publish_bundle(_store(plant), plant.keys_dir, plant.parts_dir, args.part, plant.expiry, args.version)
    if res["already"]:
        print(f"{args.part} v{res['version']} is already published with these files: nothing changed")
    else:
        print(f"published {args.part} v{res['version']}: {res['files']} files, {res['bytes']} bytes, signed "
              f"(targets version {res['targets_version']}). Roll it out: edge_ad fleet rollout {args.part} "
              f"--version {res['version']}")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from edge_ad.fleet.rollout import Rollout

    plant = _plant(args)
    view = _view(plant)
    try:
        res = Rollout(plant, _store(plant), view, args.part, args.version).run()
    finally:
        view.close()
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    return 0 if res["state"] == "done" else 1


def cmd_status(args: argparse.Namespace) -> int:
    from edge_ad.fleet.status import format_table

    plant = _plant(args)
    view = _view(plant)
    try:
        stations, rollouts = view.stations(), view.rollouts()
    finally:
        view.close()
    if args.part:
        stations = {k: v for k, v in stations.items() if v.get("part") == args.part}
        rollouts = {k: v for k, v in rollouts.items() if k == args.part}
    if args.json:
        print(json.dumps({"stations": stations, "rollouts": rollouts}, indent=1, default=str))
    else:
        print(format_table(stations, rollouts))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from edge_ad.fleet.rollout import roll_back

    plant = _plant(args)
    view = _view(plant) if not args.no_broker else None
    try:
        version = roll_back(plant, _store(plant), view, args.part, args.version)
    finally:
        if view is not None:
            view.close()
    print(f"{args.part}: every station's desired version is now v{version} (signed); stations switch at their next "
          "look (at once when told over MQTT)")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from edge_ad.fleet.publish import revoke

    plant = _plant(args)
    gone = revoke(_store(plant), plant.keys_dir, args.part, args.version, plant.expiry)
    print(f"revoked {args.part} v{args.version}: {len(gone)} target(s) no longer signed; no station installs it")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from edge_ad.fleet.repo import rotate_key

    plant = _plant(args)
    repo = rotate_key(_store(plant), plant.keys_dir, plant.root_key, args.role, plant.expiry, args.new_root_key or "")
    print(f"{args.role} key rotated: root v{repo.root.signed.version} trusts the new key and revokes the old one; "
          "stations follow the new root at their next look")
    return 0


def cmd_resign(args: argparse.Namespace) -> int:
    from edge_ad.fleet.repo import resign

    plant = _plant(args)
    repo = resign(_store(plant), plant.keys_dir, plant.expiry, args.role)
    print(f"re-signed: timestamp v{repo.timestamp.signed.version} valid until {repo.timestamp.signed.expires}")
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from edge_ad.config import parse_host_port
    from edge_ad.fleet.web import serve

    plant = _plant(args)
    host, port = parse_host_port(args.listen)
    serve(plant, host, port)
    return 0


def register(sub: argparse._SubParsersAction, parts: argparse._SubParsersAction) -> None:
    """Add `fleet` to the edge_ad command line and `publish` to `edge_ad parts`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plant", help="plant.yaml: repository, keys, broker, expiry, rollout (plant/plant.example.yaml)")
    common.add_argument("--to", metavar="URL", help="the repository: s3://bucket/prefix or a folder (sets repository)")
    common.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible server, e.g. http://minio:9000")
    common.add_argument("--keys", metavar="DIR", help="folder of the online signing keys (sets keys_dir)")
    common.add_argument("--broker", metavar="HOST:PORT", help="the central broker (sets broker.host, broker.port)")
    common.add_argument("--set", action="append", metavar="KEY=VALUE", help="any plant value, e.g. rollout.soak_s=600")

    p = parts.add_parser("publish", parents=[common], help="put a bundle into the plant's signed repository",
                         description="Uploads parts/<part>/v<N>/ (every file its manifest lists, and the manifest) as "
                                     "TUF targets with hashes and lengths, signed with the publishing machine's keys. "
                                     "Nothing is deployed until `edge_ad fleet rollout`.")
    p.add_argument("part")
    p.add_argument("--version", type=int, metavar="N", help="the version to publish (default: current)")
    p.add_argument("--parts-root", help="folder of part bundles (sets parts_dir; default: parts)")
    p.set_defaults(func=cmd_publish)

    fleet = sub.add_parser("fleet", help="a plant of stations: signed repository, staged rollouts, status",
                           description=FLEET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    fsub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    q = fsub.add_parser("init", parents=[common], help="create the repository, its keys and root metadata")
    q.add_argument("--root-key", metavar="PATH", help="the off-line root key (made there when missing)")
    q.set_defaults(func=cmd_init)
    q = fsub.add_parser("rollout", parents=[common], help="roll a published version out, group by group")
    q.add_argument("part")
    q.add_argument("--version", type=int, required=True, metavar="N")
    q.add_argument("--json", action="store_true", help="print the final progress record as JSON")
    q.set_defaults(func=cmd_rollout)
    q = fsub.add_parser("status", parents=[common], help="every station: version, state, fps, alarms; rollouts")
    q.add_argument("--part", help="only this part's stations and rollout")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_status)
    q = fsub.add_parser("rollback", parents=[common], help="every station of a part back to an earlier version")
    q.add_argument("part")
    q.add_argument("--version", type=int, metavar="N", help="the version (default: the newest older published one)")
    q.add_argument("--no-broker", action="store_true", help="only sign the desired state (stations see it at their poll)")
    q.set_defaults(func=cmd_rollback)
    q = fsub.add_parser("revoke", parents=[common], help="take a published version out of the signed targets")
    q.add_argument("part")
    q.add_argument("--version", type=int, required=True, metavar="N")
    q.set_defaults(func=cmd_revoke)
    q = fsub.add_parser("rotate-key", parents=[common], help="replace a role's key (root signs the change)")
    q.add_argument("role", help="targets | snapshot | timestamp | root")
    q.add_argument("--root-key", metavar="PATH", required=True, help="the off-line root key")
    q.add_argument("--new-root-key", metavar="PATH", help="with role root: the new root key (made when missing)")
    q.set_defaults(func=cmd_rotate)
    q = fsub.add_parser("resign", parents=[common], help="re-sign the timestamp (daily, before it expires)")
    q.add_argument("--role", default="timestamp", help="timestamp (default) or targets (re-signs snapshot too)")
    q.set_defaults(func=cmd_resign)
    q = fsub.add_parser("web", parents=[common], help="the fleet page: every station, version, state, rollouts")
    q.add_argument("--listen", default="127.0.0.1:8090", metavar="HOST:PORT")
    q.set_defaults(func=cmd_web)

