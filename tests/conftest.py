"""Shared fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic import drifting_latents


@pytest.fixture
def latents() -> np.ndarray:
    return drifting_latents()


@pytest.fixture(scope="session")
def codec():
    from shared.codec import load_codec

    return load_codec()
