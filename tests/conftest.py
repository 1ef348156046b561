try:  # tests/ as a plain folder (pytest puts it on sys.path) or as a package
    from mosquitto_fixture import mosquitto, mosquitto_factory  # noqa: F401 - pytest fixtures
except ImportError:
    from tests.mosquitto_fixture import mosquitto, mosquitto_factory  # noqa: F401

try:
    from model_fixtures import demo_root, tiny_model, tiny_onnx  # noqa: F401
except ImportError:
    from tests.model_fixtures import demo_root, tiny_model, tiny_onnx  # noqa: F401


import os  # noqa: E402

import pytest  # noqa: E402

try:
    import strict_skips
except ImportError:
    from tests import strict_skips

_MISSING_AT_COLLECTION: list[str] = []  # module-level skips for a missing part (strict mode), reported at the end


def pytest_configure(config):
    """On pytest-xdist workers the cores are shared: one OpenMP/torch thread per core and worker (set before torch
    loads), not every worker spinning a thread per core."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """pytest-xdist --dist loadgroup (pytest.ini): a test file's tests stay together on one worker (module fixtures,
    their order), unless a test names its own xdist_group (the benchmark smoke runs, each independent)."""
    for item in items:
        if not any(True for _ in item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Strict mode (CI=true, EDGE_AD_STRICT=1): a skip because a real part is missing becomes a failure naming it."""
    outcome = yield
    report = outcome.get_result()
    setting = strict_skips.strict_setting()
    if setting and report.skipped and not hasattr(report, "wasxfail"):
        reason = strict_skips.skip_reason(report)
        part = strict_skips.missing_part(reason)
        if part:
            report.outcome, report.longrepr = "failed", strict_skips.failure_text(part, reason, setting)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped for a missing part (strict mode) is remembered: the run fails at its end, naming it."""
    outcome = yield
    report = outcome.get_result()
    setting = strict_skips.strict_setting()
    if setting and report.skipped:
        reason = strict_skips.skip_reason(report)
        part = strict_skips.missing_part(reason)
        if part:
            _MISSING_AT_COLLECTION.append(f"{collector.nodeid}: {strict_skips.failure_text(part, reason, setting)}")


def pytest_terminal_summary(terminalreporter):
    if _MISSING_AT_COLLECTION:
        terminalreporter.section("real parts missing (strict mode)", red=True)
        for line in _MISSING_AT_COLLECTION:
            terminalreporter.line(line)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller reports and fails the run
        workeroutput["missing_at_collection"] = list(_MISSING_AT_COLLECTION)
        return
    if _MISSING_AT_COLLECTION and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist: a worker's modules skipped for a missing part (strict mode) count in the controller's summary."""
    for line in getattr(node, "workeroutput", {}).get("missing_at_collection", []):
        if line not in _MISSING_AT_COLLECTION:
            _MISSING_AT_COLLECTION.append(line)


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs under tmp_path that a test can fill (see helpers.SmallDisk); unmounted afterwards."""
    try:
        from helpers import SmallDisk
    except ImportError:
        from tests.helpers import SmallDisk
    try:
        disk = SmallDisk(tmp_path / "small_disk")
    except PermissionError as e:
        pytest.skip(str(e))
    yield disk
    disk.close()
