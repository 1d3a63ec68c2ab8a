"""The model factory: building on the meta device skips initialisation, and nothing else."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from zoo.models import get_model
from zoo.models.factory import _no_meta_initialisation, build_on_meta


def test_building_every_model_on_meta_does_not_import_the_compiler():
    """Initialising meta tensors through torch's Python references imports torch._dynamo
    (over a second); a meta build skips initialisation, for every registered model."""
    script = """
import sys
import torch
from zoo.models import MODELS, build_on_meta, list_models
text = {"src_vocab_size": 12, "tgt_vocab_size": 12}
for name in list_models():
    try:
        build_on_meta(MODELS.get(name))
    except TypeError:  # the sequence models need their vocabulary sizes
        build_on_meta(MODELS.get(name), **text)
print("torch._dynamo" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_a_meta_build_has_the_real_builds_names_and_shapes():
    for name, options in [("lenet5", {}), ("transformer_base", {"src_vocab_size": 11, "tgt_vocab_size": 11}),
                          ("efficientnet_b0", {"num_classes": 7})]:  # fmt: skip
        meta = {k: (v.shape, v.dtype, v.device.type) for k, v in build_on_meta(get_model, name=name, **options).state_dict().items()}
        real = {k: (v.shape, v.dtype, "meta") for k, v in get_model(name, **options).state_dict().items()}
        assert meta == real, name


def test_real_tensors_are_initialised_as_always_while_meta_ones_are_skipped():
    torch.manual_seed(0)
    expected = nn.Linear(5, 3).weight.detach().clone()
    with _no_meta_initialisation():
        torch.manual_seed(0)
        during = nn.Linear(5, 3).weight.detach().clone()  # e.g. another thread's model
        assert nn.init.normal_(torch.empty(2, device="meta")).is_meta
    torch.testing.assert_close(during, expected, rtol=0, atol=0)
    assert nn.init.normal_.__module__ == "torch.nn.init" and nn.init.kaiming_uniform_.__name__ == "kaiming_uniform_"
    assert "initialise_unless_meta" not in repr(nn.init.normal_)  # restored
