"""Shared fixtures: tiny models of the four configurations, built locally (no Hub access)."""

import os

import pytest
import torch

import fourfold  # noqa: F401  (registers the Auto classes)
from fourfold.configuration import get_config
from fourfold.training.architectures import ARCHITECTURES as REGISTRY

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

ARCHITECTURES = tuple(REGISTRY)  # the four, from the one registry
GENERATIVE = tuple(name for name, record in REGISTRY.items() if record.generates)


def pytest_configure(config):
    # `slow` tests still run by default (and in CI); deselect them locally with -m "not slow".
    config.addinivalue_line("markers", "slow: takes minutes the first time (e.g. builds a cached environment)")


def tiny_config(architecture: str, **overrides):
    """A tiny config with a small vocabulary; `overrides` set any field."""
    return get_config(f"{architecture}-tiny", vocab_size=101, **overrides)


@pytest.fixture(params=ARCHITECTURES)
def architecture(request) -> str:
    return request.param


@pytest.fixture(params=GENERATIVE)
def generative_architecture(request) -> str:
    return request.param
