"""Installs jaxrl_group. Core: the JAX stack on CPU; extras add the rest."""

from setuptools import find_packages
from setuptools import setup

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "numpy>=1.26",
    "absl-py>=2.1",
    "tensorboardX==2.6.5",
    "matplotlib>=3.8",
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
    ],
    # Datasets through tfds builders and data sources, without TensorFlow.
    "data": ["tensorflow-datasets==4.9.10", "grain==0.2.18"],
    # Hugging Face checkpoints and tokenizers; torch only for parity tests.
    "hf": [
        "transformers==5.23.0",
        "tokenizers==0.23.3",
        "safetensors==0.8.0",
        "torch==2.13.0",
    ],
    "notebook": ["jupyter", "matplotlib"],
}

setup(
    name="jaxrl_group",
    version="0.1.0",
    description=("Reinforcement learning for language models with "
                 "group-relative advantage estimators, in JAX."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["jaxrl_group", "jaxrl_group.*"]),
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
