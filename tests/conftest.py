try:  # tests/ as a plain folder (pytest puts it on sys.path) or as a package
    from mosquitto_fixture import mosquitto, mosquitto_factory  # noqa: F401 - pytest fixtures
except ImportError:
    from tests.mosquitto_fixture import mosquitto, mosquitto_factory  # noqa: F401

try:
    from model_fixtures import demo_root, tiny_model, tiny_onnx  # noqa: F401
except ImportError:
    from tests.model_fixtures import demo_root, tiny_model, tiny_onnx  # noqa: F401
