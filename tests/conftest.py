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
    from shared.codec.models import load_codec

    return load_codec()


# --- hypothesis profiles: HYPOTHESIS_PROFILE=long runs the fuzz tests much deeper ---------------
def _register_hypothesis_profiles() -> None:
    import os

    from hypothesis import settings

    settings.register_profile("ci", deadline=None, print_blob=True)
    settings.register_profile("long", max_examples=20_000, deadline=None, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_register_hypothesis_profiles()
