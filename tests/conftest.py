"""Test configuration: float64 enabled for reference comparisons; hypothesis made reproducible."""
import jax
import pytest
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

settings.register_profile("fbackprop", derandomize=True, database=None, deadline=None,
                          max_examples=12, print_blob=True)
settings.load_profile("fbackprop")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(20261122)
