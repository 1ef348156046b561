"""The station's OPC UA server with a real asyncua client: log-in rules, the result nodes, the StartSingleJob trigger
method and its result, the ActivateRecipe part-version switch (a real bundle reload)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time

import pytest

from edge_ad import bundle as B
from edge_ad.station.config import station_config_from_dict
from edge_ad.station.loop import run_station
from edge_ad.station.service import StopFlag
from edge_ad.station.status import StationStatus
from helpers import wait_until

asyncua = pytest.importorskip("asyncua", reason="asyncua is not installed (pip install 'edge_ad[opcua]')")
from asyncua import Client, ua  # noqa: E402

from edge_ad.station.doctor import check_opcua  # noqa: E402
from edge_ad.station.opcua import node_id  # noqa: E402

PASSWORD = "plc-password-for-the-test"


def nid(server, name: str) -> str:
    return f"ns={server.ns};s={node_id(name)}"


async def read(client, server, *names):
    return [await client.get_node(nid(server, n)).read_value() for n in names]


async def until(client, server, name, predicate, timeout=30.0):
    """Poll a node until predicate(value) (a PLC polls the same way); returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = (await read(client, server, name))[0]
        if predicate(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


def test_plc_reads_results_triggers_and_switches_the_part_version(tiny_onnx, tmp_path, monkeypatch, demo_root):
    monkeypatch.setenv("EDGE_AD_OPCUA_PASSWORD", PASSWORD)
    parts = tmp_path / "parts"
    files = {n: tiny_onnx.parent / n for n in ("model.onnx", "model.json")}
    B.write_bundle(parts, "demo", files, {})
    B.write_bundle(parts, "demo", files, {})
    B.switch_current(parts, "demo", 1)
    cfg = station_config_from_dict({
        "station": "s1", "part": "demo", "parts_dir": str(parts), "frame_log": str(tmp_path / "frames.jsonl"),
        "camera": {"source": str(demo_root / "train" / "good"), "live": True, "fps": 50.0},
        "evidence": {"dir": str(tmp_path / "ev")},
        "trigger": {"enabled": True, "frame_timeout_s": 2.0},
        "opcua": {"enabled": True, "port": 0, "username": "plc", "password_env": "EDGE_AD_OPCUA_PASSWORD"}})
    stop, status, box = StopFlag(), StationStatus(station="s1", part="demo"), {}
    thread = threading.Thread(target=lambda: run_station(cfg, stop, status=status, opened=lambda s: box.update(st=s)),
                              daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: "st" in box, timeout=60)
        server = next(s for s in box["st"].alarms.sinks if s.name == "opcua")
        assert server.url.startswith("opc.tcp://127.0.0.1:")
        asyncio.run(plc(server, status))
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])  # opcua.port 0: the free port it took
        probe = dataclasses.replace(cfg, opcua=dataclasses.replace(cfg.opcua, port=port))
        running = check_opcua(probe)  # `edge_ad doctor --config`: logs in as configured, reads the state
        assert running.ok and "answers: VisionSystem state Operational" in running.detail, running
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    stopped = check_opcua(probe)  # no station, no endpoint, and what to do about it
    assert not stopped.ok and "does not answer" in stopped.detail and "start the station" in stopped.fix
    rows = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [r["part_id"] for r in rows if r.get("kind") == "part"] == ["P-7", "2"]


async def plc(server, status) -> None:
    for user, password in ((None, None), ("plc", "wrong-password")):  # anonymous is off once a user is set
        client = Client(server.url, timeout=10)
        if user:
            client.set_user(user)
            client.set_password(password)
        with pytest.raises(Exception) as e:
            async with client:
                pass
        assert "BadIdentityTokenRejected" in repr(e.value) or "BadUserAccessDenied" in repr(e.value), repr(e.value)
    client = Client(server.url, timeout=10)
    client.set_user("plc")
    client.set_password(PASSWORD)
    async with client:
        assert await until(client, server, "VisionStateMachine.CurrentState", lambda v: v == "Operational") \
            == "Operational"
        assert await read(client, server, "Mode", "RecipeManagement.ProductId", "RecipeManagement.ActiveRecipeId",
                          "FaultReason") == ["triggered", "demo", "v1", ""]
        auto = client.get_node(nid(server, "VisionStateMachine.AutomaticModeStateMachine"))
        job = await auto.call_method(ua.QualifiedName("StartSingleJob", server.ns), "P-7")
        assert job == "1"
        assert await until(client, server, "ResultManagement.LastResult.ResultId", lambda v: v == "1") == "1"
        pid, state, verdict, score, thr, model, lat, created = await read(
            client, server, *("ResultManagement.LastResult." + n for n in (
                "PartId", "ResultState", "Verdict", "Score", "Threshold", "InternalRecipeId", "TriggerToResultMs",
                "CreationTime")))
        assert pid == "P-7" and verdict in ("ok", "nok") and state == {"ok": 1, "nok": -1}[verdict]
        assert score > 0 and thr > 0 and (score >= thr) == (verdict == "nok") and model == "v1" and lat > 0
        assert created is not None
        ok, nok, err = await read(client, server, "ResultManagement.OkCount", "ResultManagement.NokCount",
                                  "ResultManagement.ErrorCount")
        assert (ok + nok, err) == (1, 0)
        recipes = client.get_node(nid(server, "RecipeManagement"))
        error, message = await recipes.call_method(ua.QualifiedName("ActivateRecipe", server.ns), "v9")
        assert error == 1 and "v9" in message
        error, message = await recipes.call_method(ua.QualifiedName("ActivateRecipe", server.ns), "v2")
        assert error == 0 and "v2" in message
        assert await until(client, server, "RecipeManagement.ActiveRecipeId", lambda v: v == "v2") == "v2"
        assert await auto.call_method(ua.QualifiedName("StartSingleJob", server.ns), "") == "2"  # the counter
        assert await until(client, server, "ResultManagement.LastResult.InternalRecipeId", lambda v: v == "v2") == "v2"
        assert (await read(client, server, "ResultManagement.LastResult.PartId"))[0] == "2"
    assert status.parts_ok + status.parts_nok == 2


def test_certificate_log_in_and_a_fault_the_plc_can_read(tmp_path):
    """security sign_encrypt (Basic256Sha256) with an X509 log-in: a trusted client certificate gets in, another
    one does not; a station without its bundle shows `Error` and the reason, and a trigger gets an `error` result."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from asyncua.crypto.cert_gen import setup_self_signed_certificate

    async def make(name: str, use) -> tuple:
        key, cert = tmp_path / f"{name}.pem", tmp_path / f"{name}.der"
        await setup_self_signed_certificate(key, cert, f"urn:edge-ad:test:{name}", "localhost", [use],
                                            {"organizationName": "edge_ad test"})
        return cert, key

    async def certs():
        return (await make("server", ExtendedKeyUsageOID.SERVER_AUTH), await make("plc", ExtendedKeyUsageOID.CLIENT_AUTH),
                await make("stranger", ExtendedKeyUsageOID.CLIENT_AUTH))

    (server_cert, server_key), (plc_cert, plc_key), (other_cert, other_key) = asyncio.run(certs())
    cfg = station_config_from_dict({
        "station": "s1", "part": "demo", "parts_dir": str(tmp_path / "parts"),  # no bundle: a fault
        "frame_log": str(tmp_path / "frames.jsonl"), "evidence": {"dir": str(tmp_path / "ev")},
        "camera": {"source": str(tmp_path), "live": True}, "fault": {"retry_s": 0.2},
        "trigger": {"enabled": True},
        "opcua": {"enabled": True, "port": 0, "security": "sign_encrypt", "cert_file": str(server_cert),
                  "key_file": str(server_key), "client_certs": [str(plc_cert)]}})
    stop, status, box = StopFlag(), StationStatus(station="s1", part="demo"), {}
    thread = threading.Thread(target=lambda: run_station(cfg, stop, status=status, opened=lambda s: box.update(st=s)),
                              daemon=True)
    thread.start()

    async def client(cert, key):
        c = Client(box["server"].url, timeout=10)
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key},{server_cert}")
        await c.load_client_certificate(str(cert))  # the X509 log-in: the certificate and its key
        await c.load_private_key(str(key))
        return c

    async def plc():
        with pytest.raises(Exception) as e:
            async with await client(other_cert, other_key):
                pass
        assert "BadUserAccessDenied" in repr(e.value) or "BadIdentityToken" in repr(e.value), repr(e.value)
        async with await client(plc_cert, plc_key) as c:
            server = box["server"]
            assert await until(c, server, "VisionStateMachine.CurrentState", lambda v: v == "Error") == "Error"
            assert "part bundle not found" in (await read(c, server, "FaultReason"))[0]
            auto = c.get_node(nid(server, "VisionStateMachine.AutomaticModeStateMachine"))
            assert await auto.call_method(ua.QualifiedName("StartSingleJob", server.ns), "F-1") == "1"
            assert await until(c, server, "ResultManagement.LastResult.ResultId", lambda v: v == "1") == "1"
            verdict, state, reason = await read(c, server, *("ResultManagement.LastResult." + n for n in (
                "Verdict", "ResultState", "Reason")))
            assert (verdict, state) == ("error", 0) and "part bundle not found" in reason
            assert (await read(c, server, "ResultManagement.ErrorCount"))[0] == 1

    try:
        assert wait_until(lambda: "st" in box, timeout=60)
        box["server"] = next(s for s in box["st"].alarms.sinks if s.name == "opcua")
        asyncio.run(plc())
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
