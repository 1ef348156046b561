"""The station's OPC UA server (asyncua, pure Python) for the PLC: state and fault, part and bundle version, the last
result, OK / NOK / error counters, a trigger method and a method that switches the part version.

It runs in its own thread with its own asyncio loop and is one of the station's sinks: faults and results reach it
as they reach MQTT, and it reads the rest of StationStatus every REFRESH_S. Names follow OPC 40100 (machine vision)
where they fit; README "OPC UA" lists the node ids and where they differ from the companion specification. asyncua
is imported only when opcua.enabled.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_ad import bundle as B
from edge_ad.errors import EdgeAdError
from edge_ad.station.alarms.mqtt import resolve_password
from edge_ad.station.config import OpcuaConfig
from edge_ad.station.pieces import Station
from edge_ad.station.service import StopFlag


log = logging.getLogger(__name__)

REFRESH_S = 0.5  # state, version and counters are copied from StationStatus this often
START_TIMEOUT_S = 30.0  # building the address space takes ~2 s on a 2-core CPU
ROOT = "VisionSystem"  # OPC 40100: the VisionSystemType instance
# StationStatus.state -> OPC 40100 VisionStateMachine state names
STATE_NAMES = {"starting": "Preoperational", "running": "Operational", "fault": "Error", "stopped": "Halted"}
# PartResult.verdict -> OPC 40100 ResultState (Int32: > 0 good, < 0 bad, 0 no decision)
RESULT_STATES = {"ok": 1, "nok": -1, "error": 0}

# (node id below ROOT, UA type name, initial value): the variables the server publishes
VARIABLES = [
    ("VisionStateMachine.CurrentState", "String", "Preoperational"),
    ("FaultReason", "String", ""),
    ("Mode", "String", "continuous"),
    ("RecipeManagement.ProductId", "String", ""),
    ("RecipeManagement.ActiveRecipeId", "String", ""),
    ("ResultManagement.OkCount", "UInt32", 0),
    ("ResultManagement.NokCount", "UInt32", 0),
    ("ResultManagement.ErrorCount", "UInt32", 0),
    ("ResultManagement.LastResult.ResultId", "String", ""),
    ("ResultManagement.LastResult.PartId", "String", ""),
    ("ResultManagement.LastResult.ResultState", "Int32", 0),
    ("ResultManagement.LastResult.Verdict", "String", ""),
    ("ResultManagement.LastResult.Reason", "String", ""),
    ("ResultManagement.LastResult.Score", "Double", 0.0),
    ("ResultManagement.LastResult.Threshold", "Double", 0.0),
    ("ResultManagement.LastResult.RegionCount", "Int32", 0),
    ("ResultManagement.LastResult.InternalRecipeId", "String", ""),
    ("ResultManagement.LastResult.CreationTime", "DateTime", None),
    ("ResultManagement.LastResult.AcquisitionDuration", "Double", 0.0),
    ("ResultManagement.LastResult.ProcessingDuration", "Double", 0.0),
    ("ResultManagement.LastResult.TriggerToResultMs", "Double", 0.0),
]


def _asyncua() -> Any:
    try:
        import asyncua
    except ImportError:
        raise EdgeAdError("opcua.enabled needs asyncua: pip install 'edge_ad[opcua]'") from None
    return asyncua


def node_id(name: str) -> str:
    """The string node id of a variable or method, e.g. VisionSystem.ResultManagement.LastResult.PartId."""
    return f"{ROOT}.{name}"


def switch_version(st: Station, stop: StopFlag, wanted: str) -> str:
    """ActivateRecipe: point the part's `current` at version `wanted` (v3 or 3) and reload, as the web view's rollback
    does; returns the new version's name. EdgeAdError with the reason when it cannot."""
    cfg = st.cfg
    if cfg.bundle or not cfg.part:
        raise EdgeAdError("this station runs a fixed bundle folder: versions need part and parts_dir")
    text = str(wanted).strip().lstrip("v")
    if not text.isdigit():
        raise EdgeAdError(f"not a part version: {wanted!r} (e.g. v3)")
    root = Path(cfg.parts_dir)
    B.rollback(root, cfg.part, int(text), expect=B.current_version(root, cfg.part))
    stop.request_reload()
    log.info("opcua: switched part %s to v%s (ActivateRecipe), reloading", cfg.part, text)
    return f"v{text}"


class _Users:
    """asyncua user manager: the configured user (password compared in constant time), the configured client
    certificates, anonymous only when neither is set and opcua.allow_anonymous."""

    def __init__(self, cfg: OpcuaConfig, password: str | None, certs: list[bytes]) -> None:
        self.cfg, self.password, self.certs = cfg, password, certs

    def get_user(self, _iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if certificate:  # asyncua passes b'' for sessions without a certificate
            return User(role=UserRole.User, name="certificate") if bytes(certificate) in self.certs else None
        if username is not None:
            given = password if isinstance(password, bytes) else str(password or "").encode()
            ok = username == self.cfg.username and self.password is not None and \
                hmac.compare_digest(given, self.password.encode())
            if not ok:
                log.warning("opcua: refused log-in as %r (wrong user or password)", username[:64])
            return User(role=UserRole.User, name=username) if ok else None
        return User(role=UserRole.User) if anonymous_allowed(self.cfg) else None


def anonymous_allowed(cfg: OpcuaConfig) -> bool:
    """Anonymous sessions only where no user or certificate is configured (a configured one is the only way in)."""
    return cfg.allow_anonymous and not (cfg.username or cfg.client_certs)


class OpcuaServer:
    """The server thread; a station sink (set_fault, on_result, close) whose writes go through one asyncio queue, so
    the loop never waits for a client and results arrive in order."""

    name = "opcua"

    def __init__(self, st: Station, stop: StopFlag) -> None:
        self.st, self.stop, self.cfg = st, stop, st.cfg.opcua
        self.url = ""
        self.ns = 0  # namespace index of opcua.namespace
        self._ua = _asyncua()
        self._password = resolve_password(self.cfg) if self.cfg.username else None  # type: ignore[arg-type]
        self._certs = [_read_cert(p) for p in self.cfg.client_certs]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._nodes: dict[str, Any] = {}
        self._server: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edge_ad-opcua", daemon=True)

    # --- the station side (loop thread) ---------------------------------------------------------------
    def start(self) -> OpcuaServer:
        """Serve (the address space takes a few seconds to build); EdgeAdError in one line when it cannot."""
        ua_log = logging.getLogger("asyncua")
        if ua_log.level == logging.NOTSET:  # asyncua logs every session at INFO: the station's log keeps its own lines
            ua_log.setLevel(logging.WARNING)
        if self.cfg.username and self.cfg.security == "none":
            log.warning("opcua: the password of user %s goes over the network in plain text (opcua.security none); "
                        "use sign_encrypt beyond this machine", self.cfg.username)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._error is not None:
            self.close()
            why = self._error or f"not up after {START_TIMEOUT_S:g} s"
            raise EdgeAdError(f"opcua: cannot serve on {self.cfg.host}:{self.cfg.port}: {why}")
        log.info("opcua: serving %s (namespace %s = ns=%d, security %s, %s)", self.url, self.cfg.namespace, self.ns,
                 self.cfg.security, "anonymous allowed" if anonymous_allowed(self.cfg) else "log-in required")
        return self

    def _put(self, item: dict[str, Any]) -> None:
        loop, queue = self._loop, self._queue
        if loop is not None and queue is not None and not loop.is_closed():
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def on_result(self, result: Any) -> None:
        s = self.st.status
        t = result.timings
        self._put({  # ResultId last: a PLC that sees it change reads the rest of this result (one task writes all)
            "ResultManagement.LastResult.PartId": result.part_id,
            "ResultManagement.LastResult.ResultState": RESULT_STATES[result.verdict],
            "ResultManagement.LastResult.Verdict": result.verdict,
            "ResultManagement.LastResult.Reason": result.reason,
            "ResultManagement.LastResult.Score": float(result.score or 0.0),
            "ResultManagement.LastResult.Threshold": float(result.threshold or 0.0),
            "ResultManagement.LastResult.RegionCount": int(result.regions),
            "ResultManagement.LastResult.InternalRecipeId": result.model_version,
            "ResultManagement.LastResult.CreationTime": datetime.fromtimestamp(result.time, timezone.utc),
            "ResultManagement.LastResult.AcquisitionDuration": float(t.get("wait_frame_ms", 0.0)),
            "ResultManagement.LastResult.ProcessingDuration": float(sum(t.get(k, 0.0) for k in (
                "preprocess_ms", "infer_ms", "postprocess_ms"))),
            "ResultManagement.LastResult.TriggerToResultMs": float(result.latency_ms),
            # the counters as they are with this result (StationStatus counts it right after the sinks)
            "ResultManagement.OkCount": s.parts_ok + (result.verdict == "ok"),
            "ResultManagement.NokCount": s.parts_nok + (result.verdict == "nok"),
            "ResultManagement.ErrorCount": s.parts_error + (result.verdict == "error"),
            "ResultManagement.LastResult.ResultId": str(result.seq),
        })

    def set_fault(self, reason: str) -> None:
        self._put({"FaultReason": reason, "VisionStateMachine.CurrentState": "Error" if reason else "Operational"})

    def on_event(self, _event: Any) -> None:
        pass

    def set_active(self, _active: bool) -> None:
        pass

    def close(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._queue is not None:
            self._put({"_stop": True})
        self._thread.join(5.0)

    # --- the server thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by start(), or logged once it ran
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("opcua: server stopped")

    async def _main(self) -> None:
        ua = self._ua.ua
        server = self._ua.Server(user_manager=_Users(self.cfg, self._password, self._certs))
        await server.init()
        server.set_endpoint(endpoint(self.cfg.host, self.cfg.port))
        server.set_server_name(f"edge_ad {self.st.cfg.station}")
        policy = {"none": ua.SecurityPolicyType.NoSecurity, "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
                  "sign_encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt}[self.cfg.security]
        server.set_security_policy([policy])
        tokens = [ua.AnonymousIdentityToken] if anonymous_allowed(self.cfg) else []
        tokens += [ua.UserNameIdentityToken] if self.cfg.username else []
        tokens += [ua.X509IdentityToken] if self.cfg.client_certs else []
        server.set_identity_tokens(tokens)
        if self.cfg.security != "none":
            await server.load_certificate(self.cfg.cert_file)
            await server.load_private_key(self.cfg.key_file)
        self.ns = await server.register_namespace(self.cfg.namespace)
        self._server = server
        await self._build(server)
        starting = logging.getLogger("asyncua.server.server")  # it logs a traceback before raising: start() says it
        level = starting.level
        starting.setLevel(logging.CRITICAL)
        try:
            await server.start()
        finally:
            starting.setLevel(level)
        port = server.bserver.port if server.bserver is not None else self.cfg.port
        self.url = endpoint(self.cfg.host, port)
        self._loop, self._queue = asyncio.get_running_loop(), asyncio.Queue()
        self._ready.set()
        try:
            await self._serve()
        finally:
            await server.stop()

    async def _serve(self) -> None:
        """Apply queued writes in order; refresh state, version and counters from the status every REFRESH_S."""
        assert self._queue is not None
        next_refresh = 0.0
        while True:
            timeout = max(0.0, next_refresh - time.monotonic())
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except asyncio.TimeoutError:
                item = None
            if item is not None:
                if item.get("_stop"):
                    return
                await self._write(item)
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + REFRESH_S
                await self._write(self._from_status())

    def _from_status(self) -> dict[str, Any]:
        s = self.st.status.snapshot()
        return {"VisionStateMachine.CurrentState": STATE_NAMES.get(s["state"], s["state"]),
                "FaultReason": s["fault"], "Mode": s["mode"], "RecipeManagement.ProductId": s["part"],
                "RecipeManagement.ActiveRecipeId": s["version"], "ResultManagement.OkCount": s["parts_ok"],
                "ResultManagement.NokCount": s["parts_nok"], "ResultManagement.ErrorCount": s["parts_error"]}

    async def _write(self, values: dict[str, Any]) -> None:
        """Straight into the address space (no per-write service call): subscribed clients see every change."""
        ua = self._ua.ua
        for name, value in values.items():
            node, vtype = self._nodes[name]
            await self._server.write_attribute_value(node.nodeid, ua.DataValue(ua.Variant(value, vtype)))

    async def _build(self, server: Any) -> None:
        """Objects/VisionSystem with its variables and the two methods (string node ids in our namespace)."""
        ua = self._ua.ua
        ns = self.ns
        folders: dict[str, Any] = {"": await server.nodes.objects.add_object(ua.NodeId(ROOT, ns),
                                                                          ua.QualifiedName(ROOT, ns))}

        async def folder(path: str) -> Any:
            if path not in folders:
                parent, _, leaf = path.rpartition(".")
                folders[path] = await (await folder(parent)).add_object(ua.NodeId(node_id(path), ns),
                                                                        ua.QualifiedName(leaf, ns))
            return folders[path]

        for name, type_name, value in VARIABLES:
            parent, _, leaf = name.rpartition(".")
            vtype = getattr(ua.VariantType, type_name)
            node = await (await folder(parent)).add_variable(ua.NodeId(node_id(name), ns), ua.QualifiedName(leaf, ns),
                                                             ua.Variant(value, vtype))
            self._nodes[name] = (node, vtype)

        def arg(name: str, type_name: str, text: str) -> Any:
            a = ua.Argument()
            a.Name, a.DataType, a.ValueRank = name, ua.NodeId(getattr(ua.ObjectIds, type_name)), -1
            a.Description = ua.LocalizedText(text)
            return a

        await (await folder("VisionStateMachine.AutomaticModeStateMachine")).add_method(
            ua.NodeId(node_id("VisionStateMachine.AutomaticModeStateMachine.StartSingleJob"), ns),
            ua.QualifiedName("StartSingleJob", ns), self._start_single_job,
            [arg("PartId", "String", "the part's id; empty: the station's counter")],
            [arg("JobId", "String", "the trigger number; LastResult.ResultId takes it when the result is there")])
        await (await folder("RecipeManagement")).add_method(
            ua.NodeId(node_id("RecipeManagement.ActivateRecipe"), ns), ua.QualifiedName("ActivateRecipe", ns),
            self._activate_recipe, [arg("ExternalId", "String", "the part version to run, e.g. v3")],
            [arg("Error", "Int32", "0: switched and reloading; 1: refused (Message says why)"),
             arg("Message", "String", "what happened")])

    def _start_single_job(self, _parent: Any, part_id: Any) -> list[Any]:
        ua = self._ua.ua
        from edge_ad.station.trigger import clean_part_id

        line = self.st.line
        if line is None or not self.st.cfg.trigger.enabled:
            raise self._ua.ua.UaStatusCodeError(ua.StatusCodes.BadInvalidState)
        try:
            text = clean_part_id(part_id.Value if hasattr(part_id, "Value") else part_id)
        except ValueError:
            raise self._ua.ua.UaStatusCodeError(ua.StatusCodes.BadInvalidArgument) from None
        trig = line.queue.fire("opcua", text)
        return [ua.Variant(str(trig.seq), ua.VariantType.String)]

    def _activate_recipe(self, _parent: Any, external_id: Any) -> list[Any]:
        ua = self._ua.ua
        wanted = external_id.Value if hasattr(external_id, "Value") else external_id
        try:
            message, error = f"switched to {switch_version(self.st, self.stop, wanted)}, reloading", 0
        except EdgeAdError as exc:
            message, error = str(exc), 1
            log.warning("opcua: ActivateRecipe(%r) refused: %s", str(wanted)[:64], exc)
        return [ua.Variant(error, ua.VariantType.Int32), ua.Variant(message, ua.VariantType.String)]


def endpoint(host: str, port: int) -> str:
    """The server's endpoint URL."""
    return f"opc.tcp://{'[' + host + ']' if ':' in host else host}:{port}/edge_ad/"


async def read_state(client_cls: Any, cfg: Any, timeout_s: float) -> str:
    """`edge_ad doctor`: log in to a running station's endpoint as its config says, read VisionStateMachine state."""
    o = cfg.opcua
    client = client_cls(endpoint(o.host, o.port), timeout=timeout_s)
    if o.username:
        client.set_user(o.username)
        client.set_password(resolve_password(o) or "")
    async with client:
        ns = await client.get_namespace_index(o.namespace)
        return str(await client.get_node(f"ns={ns};s={node_id('VisionStateMachine.CurrentState')}").read_value())


def _read_cert(path: str) -> bytes:
    """A client certificate (PEM or DER) as DER bytes, which is what a session presents."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EdgeAdError(f"opcua.client_certs: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN" in data:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


def start_opcua(st: Station, stop: StopFlag) -> OpcuaServer | None:
    """When opcua.enabled: serve, and join the station's sinks (faults and results reach it); EdgeAdError when it
    cannot (a PLC line must not run without the interface it reads)."""
    if not st.cfg.opcua.enabled:
        return None
    server = OpcuaServer(st, stop).start()
    st.alarms.sinks.append(server)
    return server
