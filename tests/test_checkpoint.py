import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from zoo.checkpoint import CheckpointError, load_file, load_lightning_checkpoint


class _CreatesAFile:
    """A pickle payload that would run code when unpickled without restriction."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _CreatesAFile(marker)}, f)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint: not the tensors and plain containers"):
        load_file(path)  # pickle.dump's protocol stops torch's restricted unpickler before the global
    assert not marker.exists()
    torch.save({"state_dict": _CreatesAFile(marker)}, path)
    with pytest.raises(CheckpointError, match="is refused: it names posix.system") as refused:
        load_file(path)
    assert not marker.exists()
    assert "weights_only=False" not in str(refused.value)


def test_truncated_and_missing_files_name_the_path(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.randn(100, 100)}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(path)):
        load_file(path)
    with pytest.raises(CheckpointError, match=f"not found: {tmp_path / 'missing.ckpt'}"):
        load_file(tmp_path / "missing.ckpt")


def test_state_dicts_and_safetensors_round_trip(tmp_path):
    weights = {"w": torch.randn(3, 4), "b": torch.arange(3)}
    torch.save(weights, tmp_path / "w.pth")
    save_file(weights, tmp_path / "w.safetensors")
    for name in ("w.pth", "w.safetensors"):
        loaded = load_file(tmp_path / name)
        assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_file(tmp_path / "bad.safetensors")


def test_a_plain_state_dict_is_not_a_training_checkpoint(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="not a zoo training checkpoint"):
        load_lightning_checkpoint(tmp_path / "w.pth")


def test_hyperparameters_naming_an_import_target_are_refused(tmp_path):
    ckpt = {"state_dict": {}, "hyper_parameters": {"model": {"name": "mlp"}, "_instantiator": "os.system"}}
    torch.save(ckpt, tmp_path / "a.ckpt")
    with pytest.raises(CheckpointError, match=r"import targets .*hyper_parameters\._instantiator"):
        load_lightning_checkpoint(tmp_path / "a.ckpt")
    ckpt["hyper_parameters"] = {"model": {"name": "mlp", "act": {"_target_": "os.system"}}}
    torch.save(ckpt, tmp_path / "b.ckpt")
    with pytest.raises(CheckpointError, match=r"hyper_parameters\.model\.act\._target_"):
        load_lightning_checkpoint(tmp_path / "b.ckpt")


def test_lightnings_checkpoint_plugin_saves_whole_and_loads_through_the_guarded_reader(tmp_path):
    from zoo.checkpoint_io import AtomicCheckpointIO

    plugin = AtomicCheckpointIO()
    ckpt = {"state_dict": {"w": torch.arange(3.0)}, "hyper_parameters": {"lr": 0.1}}
    path = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(TypeError, match="^AtomicCheckpointIO takes no storage_options$"):
        plugin.save_checkpoint(ckpt, path, storage_options={"compress": True})
    assert not path.parent.exists()  # refused before anything was written
    plugin.save_checkpoint(ckpt, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    _as_if_saved_on_cuda(path)  # trained on a GPU, resumed or tested on a CPU-only machine
    for where in (None, "cpu", torch.device("cpu")):  # None, as Lightning may pass it: the CPU
        loaded = plugin.load_checkpoint(path, map_location=where)
        assert torch.equal(loaded["state_dict"]["w"], torch.arange(3.0)) and loaded["state_dict"]["w"].device.type == "cpu"
        assert loaded["hyper_parameters"] == {"lr": 0.1}
    torch.save({"state_dict": {}, "hyper_parameters": {"_target_": "os.system"}}, path)
    with pytest.raises(CheckpointError, match="_target_"):
        plugin.load_checkpoint(path)


def _as_if_saved_on_cuda(path) -> None:
    """Rewrite a torch.save zip so that its tensors say they were saved from ``cuda:0``, as a
    checkpoint written on a GPU machine does (loading it without a CPU map fails without CUDA)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    pickled = next(name for name in members if name.endswith("/data.pkl"))
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # pickle's length-prefixed strings
    assert members[pickled].count(cpu) == 1
    members[pickled] = members[pickled].replace(cpu, cuda)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="on a CUDA device"):
            torch.load(path, weights_only=True)  # what a load without map_location meets


def _training_state(state_dict, model=None, **drop) -> dict:
    ckpt = {"state_dict": state_dict, "hyper_parameters": {"model": model} if model is not None else {},
            "optimizer_states": [], "loops": {}, "epoch": 2, "global_step": 40}  # fmt: skip
    return {k: v for k, v in ckpt.items() if k not in drop}


def test_a_resume_needs_the_optimizer_and_loop_states_and_names_each_missing_one(tmp_path):
    from zoo.checkpoint import load_training_state

    path = tmp_path / "last.ckpt"
    torch.save(_training_state({"w": torch.ones(2)}), path)
    assert load_training_state(path)["global_step"] == 40
    for missing in (["optimizer_states"], ["loops", "epoch"], ["optimizer_states", "loops", "epoch", "global_step"]):
        torch.save(_training_state({"w": torch.ones(2)}, **dict.fromkeys(missing)), path)
        with pytest.raises(CheckpointError) as err:
            load_training_state(path)
        assert str(err.value) == (
            f"{path.resolve()} holds weights but not a training run's state (no {', '.join(missing)}); "
            f"to start from its weights use finetune.weights={path} instead of resuming"
        )


def test_resuming_another_network_is_refused_naming_the_first_difference_and_the_count(tmp_path):
    from zoo.checkpoint import check_resumable

    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))  # 0.weight/bias, 1.weight/bias
    ours = {k: v.clone() for k, v in module.state_dict().items()}
    path = tmp_path / "last.ckpt"
    check_resumable(_training_state(ours), module, path)  # the same names and shapes: no error

    def refused(state_dict, model=None) -> str:
        with pytest.raises(CheckpointError) as err:
            check_resumable(_training_state(state_dict, model), module, path)
        return str(err.value)

    prefix = f"{path.resolve()} was saved from "
    suffix = "; resume with the config it was trained with"
    two_missing = {k: v for k, v in ours.items() if not k.startswith("1.")}
    assert refused(two_missing, {"name": "mlp"}) == (
        prefix + "mlp and does not fit this run's model (2 parameters differ: missing 1.bias)" + suffix
    )
    extra = {**ours, "2.weight": torch.ones(1), "3.weight": torch.ones(1), "2.bias": torch.ones(1)}
    assert refused(extra, {"depth": 3}) == (  # no name recorded
        prefix + "another model and does not fit this run's model (3 parameters differ: unexpected 2.bias)" + suffix
    )
    reshaped = {**ours, "1.weight": torch.ones(5, 4), "0.bias": torch.ones(7)}
    assert refused(reshaped, "not a dict") == (
        prefix + "another model and does not fit this run's model "
        "(2 parameters differ: 0.bias is (7,), here (4,))" + suffix
    )
    everything = {"0.weight": ours["0.weight"], "1.weight": torch.ones(9, 9), "9.bias": torch.ones(1)}
    assert refused(everything, {"name": "lenet5"}) == (  # one missing (0.bias, 1.bias), one extra, one reshaped
        prefix + "lenet5 and does not fit this run's model (4 parameters differ: missing 0.bias)" + suffix
    )
    for bad in ({"w": "not a tensor"}, ["a", "list"]):
        assert refused(bad) == f"{path.resolve()}: its state_dict is not a mapping of names to tensors"
