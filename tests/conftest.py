"""Test configuration.

float64 is not enabled globally: each test runs inside ``jax.enable_x64(True)`` (reference
comparisons in float64), except float32 tests — those marked ``float32`` or parametrized with a
float32 dtype — which run with x64 off, so float32 code cannot silently compute in float64.
Hypothesis is derandomized, with no database and no deadline.
"""
import jax
import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("fbackprop", derandomize=True, database=None, deadline=None,
                          max_examples=12, print_blob=True)
settings.load_profile("fbackprop")

_FLOAT32 = {"float32", np.float32, np.dtype("float32")}


def pytest_configure(config):
    config.addinivalue_line("markers", "float32: run with float64 disabled (x64 off)")


def is_float32_test(item) -> bool:
    if item.get_closest_marker("float32") is not None:
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(isinstance(v, (str, type, np.dtype)) and v in _FLOAT32 for v in params.values()
               if isinstance(v, (str, type, np.dtype)))


@pytest.fixture(autouse=True)
def _x64(request):
    with jax.enable_x64(not is_float32_test(request.node)):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
