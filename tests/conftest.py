import os

import pytest
import torch

from tests.helpers import model_lists

os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n auto runs one worker per core: each computes on one thread (and so do the
    # commands it starts), instead of every worker's threads competing for every core.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, which on a busy machine only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Tests that ask for model_name, image_model, family_model or family_image_model are
# parametrised over the registry's lists (helpers.model_lists, built once per process).
def pytest_generate_tests(metafunc):
    for argument, names in model_lists().items():
        if argument in metafunc.fixturenames:
            metafunc.parametrize(argument, names)
