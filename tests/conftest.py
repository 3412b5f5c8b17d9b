"""Shared test setup: headless rendering, few threads, deterministic seeds."""

import os

os.environ.setdefault("PYGLET_HEADLESS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

# Property-based tests (hypothesis): derandomized so CI runs the same cases every time; the "thorough"
# profile (WM_HYPOTHESIS_PROFILE=thorough, WM_HYPOTHESIS_EXAMPLES=n) is what scripts/reliability.py runs.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, database=None,
                          print_blob=True)
settings.register_profile("thorough", max_examples=int(os.environ.get("WM_HYPOTHESIS_EXAMPLES", "500")),
                          deadline=None, derandomize=True, database=None,
                          print_blob=True)
settings.load_profile(os.environ.get("WM_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models: extra threads only add contention on a shared machine (opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
