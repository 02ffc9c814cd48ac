"""Installs the DUPN training pipeline: packages pipeline, models, features, configs and `dupn`."""
from setuptools import find_packages, setup

setup(
    name="dupn",
    version="0.1.0",
    description="DUPN (Ni et al., KDD 2018): universal user representations from multiple "
                "e-commerce tasks, with Beam example jobs and Keras training",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "models", "features", "configs"]),
    package_data={"configs": ["*.yaml"]},
    install_requires=[
        "tensorflow==2.17.*",
        "tensorflow-serving-api==2.17.*",   # PredictionLog protos of the warm-up records
        "tf-keras==2.17.*",
        "tensorflow-io==0.37.1",
        "apache-beam>=2.60,<3",
        "pyarrow>=14",
        "numpy>=1.26,<2",
        "pandas>=2",
        "pyyaml>=6",
        "matplotlib>=3.8",
        "psutil>=5.9",
        "google-crc32c>=1.5",   # TFRecord checksums in the Beam example job
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2", "pytest-xdist>=3",
                             "apache-beam[dask]>=2.60,<3",    # tests/test_beam_dask.py
                             "isal>=1.6"],                    # tests/test_beam_blocks.py
                    "dask": ["apache-beam[dask]>=2.60,<3"],   # build-examples --runner dask
                    "fast-gzip": ["isal>=1.6"]},   # data.gzip_encoder=isal
    entry_points={"console_scripts": ["dupn=pipeline.cli:main"]},
)
