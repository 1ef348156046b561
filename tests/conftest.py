try:  # tests/ as a plain folder (pytest puts it on sys.path) or as a package
    from mosquitto_fixture import mosquitto, mosquitto_factory  # noqa: F401 - pytest fixtures
except ImportError:
    from tests.mosquitto_fixture import mosquitto, mosquitto_factory  # noqa: F401

try:
    from model_fixtures import demo_root, tiny_model, tiny_onnx  # noqa: F401
except ImportError:
    from tests.model_fixtures import demo_root, tiny_model, tiny_onnx  # noqa: F401


import pytest  # noqa: E402


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
