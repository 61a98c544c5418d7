"""detlab: a Detectron2-style object-detection research codebase."""

from pathlib import Path

from setuptools import find_packages, setup


def _version() -> str:
    text = (Path(__file__).parent / "detlab" / "__init__.py").read_text()
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("detlab/__init__.py has no __version__")


setup(
    name="detlab",
    version=_version(),
    description="Object-detection research codebase: registries, FPN variants, size-aware "
    "losses, SAR data, a trainer that survives NaNs, evaluation by object size and class.",
    long_description=(Path(__file__).parent / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["detlab", "detlab.*"]),
    include_package_data=True,
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.7",
        "faster-coco-eval>=1.6",
        "albumentations>=1.4",
        "opencv-python-headless>=4.8",
        "tensorboard>=2.14",
        "wandb>=0.16",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "tqdm>=4.65",
        "matplotlib>=3.7",
        "orjson>=3.9",
        "pillow>=9.1",
    ],
    extras_require={
        "dev": [
            "pytest>=7.4",
            "pytest-timeout>=2.2",
            "hypothesis>=6.90",
            "ruff>=0.17,<0.18",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "submitit>=1.5",
            "timm>=0.9",
            "optuna>=4.0",
            "cmaes>=0.10",
            "plotly>=5.0",
        ],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "slurm": ["submitit>=1.5"],
        # Sweeps as Optuna studies: TPE/CMA-ES, pruners, SQLite/journal/database storage,
        # figures (plotly for HTML). Databases need their driver, e.g. psycopg2-binary.
        "sweep": ["optuna>=4.0", "cmaes>=0.10", "plotly>=5.0"],
        "timm": ["timm>=0.9"],
        "wandb": ["wandb>=0.16"],
    },
)
