"""Pretrained weights into zoo models: formats, torchvision names, strictness, channels, safety."""

from __future__ import annotations

import functools
import logging
import pickle
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from zoo.checkpoint import CheckpointError
from zoo.errors import ZooError
from zoo.models.pretrained import (
    EXPECTED, Pretrained, _fetch, adapt_input_channels, first_conv, load_into, load_pretrained,
)  # fmt: skip
from zoo.models.weights import Preprocessing, WeightsError, find_weights
from zoo.models import MODELS, ImageModel, get_model
from zoo.models.factory import build_on_meta

SRC = Path(__file__).resolve().parents[2] / "src" / "zoo" / "models"


def _torchvision_vit_tiny(**kwargs) -> torch.nn.Module:
    """torchvision's ViT class at the zoo ``vit_tiny`` size (DeiT-Ti), 5.7M instead of 86M parameters."""
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=224, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768, **kwargs
    )


# zoo name -> torchvision builder; ViT joins when its family exists.
FAMILIES = {
    "alexnet": torchvision.models.alexnet,
    "vgg11": torchvision.models.vgg11,
    "googlenet": functools.partial(torchvision.models.googlenet, init_weights=False),
    "resnet18": torchvision.models.resnet18,
    "densenet121": torchvision.models.densenet121,
    "efficientnet_b0": torchvision.models.efficientnet_b0,
}
if (SRC / "vit.py").is_file():
    FAMILIES["vit_tiny"] = _torchvision_vit_tiny


def _materialise(model: torch.nn.Module) -> torch.nn.Module:
    """A model built on ``meta`` given real values, a different one per tensor, without
    running its initialisers or a random generator over 100M values (fast)."""
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for i, t in enumerate(model.state_dict().values()):
            t.fill_(1 + i / 1000 if t.is_floating_point() else i)  # positive: valid running variances too
    return model


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


# Both formats for every family, except the two with a 100M-parameter first linear layer
# (0.2-0.5 GB files): one format each, so both formats are still read for them.
CASES = [(arch, suffix) for arch in FAMILIES for suffix in (".pth", ".safetensors")
         if (arch, suffix) not in {("vgg11", ".pth"), ("alexnet", ".safetensors")}]  # fmt: skip


@pytest.mark.parametrize("arch, suffix", CASES)
def test_torchvision_state_dicts_load_strictly_and_the_head_is_replaced(tmp_path, arch, suffix, caplog, one_thread):
    with torch.device("meta"):
        reference = FAMILIES[arch](weights=None) if arch != "vit_tiny" else FAMILIES[arch]()
    state = _materialise(reference).state_dict()
    path = _save(state, tmp_path / f"{arch}{suffix}")
    del reference

    net = build_on_meta(MODELS.get(arch), num_classes=7).to_empty(device="cpu")
    with caplog.at_level(logging.INFO, logger="zoo.models"):
        skipped = load_into(net, load_pretrained(str(path)))

    own = net.state_dict()
    assert skipped and all(own[k].shape[0] == 7 for k in skipped if k.endswith("weight"))
    assert "re-initialised" in caplog.text and skipped[0] in caplog.text  # the log names the skipped keys
    for key, value in state.items():
        if key not in skipped:
            assert torch.equal(own[key], value), key
    assert net.num_classes == 7
    if arch != "vit_tiny":  # (the ViT takes 224 px only; its head shape is checked above)
        size = max(net.min_image_size, 32)
        assert net.eval()(torch.randn(1, 3, size, size)).shape == (1, 7)


def test_the_head_is_loaded_when_the_class_count_matches_unless_reset(tmp_path, one_thread):
    source = get_model("resnet18", num_classes=10, small_input=True)
    path = _save(source.state_dict(), tmp_path / "r18.pth")
    net = get_model("resnet18", num_classes=10, small_input=True)
    assert load_into(net, load_pretrained(str(path))) == []
    assert torch.equal(net.fc.weight, source.fc.weight)
    assert load_into(net, load_pretrained(str(path)), reset_head=True) == ["fc.bias", "fc.weight"]
    assert not torch.equal(net.fc.weight, source.fc.weight)
    assert torch.equal(net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_zoo_checkpoints_are_read_without_the_net_prefix_and_with_their_preprocessing(tmp_path, one_thread):
    source = get_model("lenet5", num_classes=10)
    ckpt = {
        "state_dict": {f"net.{k}": v for k, v in source.state_dict().items()},
        "hyper_parameters": {"model": {"name": "lenet5", "num_classes": 10}},
        "datamodule_hyper_parameters": {"name": "digits", "image_size": 32, "mean": None, "std": None},
        "DigitsDataModule": {"image_size": 32, "mean": [0.25], "std": [0.5]},
    }
    torch.save(ckpt, tmp_path / "run.ckpt")
    pretrained = load_pretrained(str(tmp_path / "run.ckpt"))
    assert pretrained.model_name == "lenet5" and set(pretrained.state_dict) == set(source.state_dict())
    facts = pretrained.preprocessing
    assert (facts.image_size, facts.mean, facts.std) == (32, (0.25,), (0.5,))  # the state, not the null hparams
    net = get_model("lenet5", num_classes=10)
    load_into(net, pretrained)
    assert torch.equal(net.c1[0].weight, source.c1[0].weight)


def test_old_torchvision_densenet_key_names_are_converted(tmp_path, one_thread):
    with torch.device("meta"):
        net = get_model("densenet121", num_classes=10)
    old_names = {"denselayer1.norm1.": "denselayer1.norm.1.", "denselayer1.conv2.": "denselayer1.conv.2."}
    legacy = {}
    for key, value in net.state_dict().items():
        for new, old in old_names.items():
            key = key.replace(new, old)
        legacy[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch.save({k: torch.zeros(v.shape) for k, v in legacy.items()}, tmp_path / "densenet121.pth")
    assert set(load_pretrained(str(tmp_path / "densenet121.pth")).state_dict) == set(net.state_dict())


# --------------------------------------------------------------------------- torchvision names


def test_a_torchvision_weights_name_resolves_to_torchvisions_cache_file(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = find_weights("ResNet18_Weights.IMAGENET1K_V1", None)
    path = weights.file()
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert path.name == Path(weights.source).name

    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
    pretrained = load_pretrained("ResNet18_Weights.IMAGENET1K_V1", download=True)
    assert str(path) in pretrained.source
    # The enum's transforms: 224 px crops, ImageNet statistics.
    assert pretrained.preprocessing.image_size == 224
    assert pretrained.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    net = get_model("resnet18", num_classes=10)
    assert load_into(net, pretrained) == ["fc.bias", "fc.weight"]


def test_missing_torchvision_weights_offline_name_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(WeightsError, match="not in the cache") as err:
        load_pretrained("ResNet50_Weights.IMAGENET1K_V2", download=False)
    assert str(expected) in str(err.value)

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="could not download") as err:
        load_pretrained("ResNet50_Weights.IMAGENET1K_V2", download=True)
    assert str(expected) in str(err.value)
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in str(err.value)
    with pytest.raises(WeightsError, match="unknown torchvision weights name"):
        load_pretrained("ResNet50_Weights.IMAGENET9K")


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    good = get_model("lenet5").state_dict()
    torch.save(good, tmp_path / "good.pth")
    blob = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(blob[: len(blob) // 2])
    save_file({k: v.contiguous() for k, v in good.items()}, str(tmp_path / "good.safetensors"))
    blob = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(blob[: len(blob) // 2])
    torch.save([1, 2, 3], tmp_path / "list.pth")
    torch.save({"conv.weight": "not a tensor"}, tmp_path / "strings.pth")
    torch.save(get_model("mlp").state_dict(), tmp_path / "mlp.pth")
    return {
        "missing": tmp_path / "nope.pth",
        "truncated .pth": tmp_path / "truncated.pth",
        "truncated .safetensors": tmp_path / "truncated.safetensors",
        "not a state_dict (list)": tmp_path / "list.pth",
        "not a state_dict (strings)": tmp_path / "strings.pth",
    }


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "not found"),
        ("truncated .pth", "truncated or corrupt"),
        ("truncated .safetensors", "not a valid safetensors file"),
        ("not a state_dict (list)", "is not a state_dict: expected a mapping of parameter names to tensors"),
        ("not a state_dict (strings)", "is not a state_dict"),
    ],
)
def test_unreadable_weights_raise_a_zoo_error_naming_the_file(bad_files, case, message):
    path = bad_files[case]
    with pytest.raises(WeightsError, match=message) as err:
        load_pretrained(str(path))
    assert isinstance(err.value, ZooError) and isinstance(err.value, CheckpointError)
    assert str(path.resolve()) in str(err.value)


def test_weights_of_another_architecture_list_the_missing_and_unexpected_keys(tmp_path):
    torch.save(get_model("mlp").state_dict(), tmp_path / "mlp.pth")
    with pytest.raises(WeightsError, match=r"does not fit LeNet5: \d+ missing keys \[c1\.0\.weight") as err:
        load_into(get_model("lenet5"), load_pretrained(str(tmp_path / "mlp.pth")))
    assert str(tmp_path / "mlp.pth") in str(err.value) and "unexpected keys [features" in str(err.value)


def test_a_shape_mismatch_outside_the_head_names_the_key_and_both_shapes(tmp_path):
    torch.save(get_model("resnet18", small_input=False).state_dict(), tmp_path / "r18.pth")
    shapes = r"conv1\.weight has shape \(64, 3, 7, 7\) in the weights and \(64, 3, 3, 3\) in the model"
    with pytest.raises(WeightsError, match=shapes):
        load_into(get_model("resnet18", small_input=True), load_pretrained(str(tmp_path / "r18.pth")))


class _Payload:
    """Unpickling this object would create ``target`` (a stand-in for arbitrary code)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return open, (str(self.target), "w")


def test_a_malicious_pickle_is_refused_and_its_code_never_runs(tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists()  # the payload is live: plain unpickling runs it

    target = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(target)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="is refused: it names io.open") as err:
        load_pretrained(str(tmp_path / "evil.pth"))
    assert str((tmp_path / "evil.pth").resolve()) in str(err.value)
    assert not target.exists()


# --------------------------------------------------------------------------- channels


@pytest.mark.parametrize("name", [*FAMILIES, "lenet5", "mlp"])
def test_the_declared_first_conv_reads_the_input(name):
    net = build_on_meta(MODELS.get(name), in_channels=2)
    assert isinstance(net, ImageModel)
    found = first_conv(net)
    if found is None:  # fully connected networks have none
        assert not any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
        return
    key, conv = found
    assert conv.in_channels == 2 and f"{key}.weight" in net.state_dict()


def test_summed_kernels_on_gray_images_equal_the_rgb_network_on_replicated_images(tmp_path, one_thread):
    rgb = get_model("resnet18", num_classes=10, in_channels=3, small_input=True).double().eval()
    torch.save(rgb.state_dict(), tmp_path / "rgb.pth")
    gray = get_model("resnet18", num_classes=10, in_channels=1, small_input=True).double().eval()
    load_into(gray, load_pretrained(str(tmp_path / "rgb.pth")), adapt_channels="sum")
    assert gray.conv1.weight.shape == (64, 1, 3, 3)
    images = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(gray(images), rgb(images.repeat(1, 3, 1, 1)), rtol=1e-12, atol=1e-12)
    with pytest.raises(AssertionError):  # the check can fail: one channel alone is not the same network
        red_only = torch.cat([images, 0 * images, 0 * images], 1)
        torch.testing.assert_close(gray(images), rgb(red_only), rtol=1e-6, atol=1e-6)


def _zoo_checkpoint(state: dict[str, torch.Tensor], path: Path, **model) -> Path:
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}, "hyper_parameters": {"model": model}}, path)
    return path


def test_a_zoo_checkpoint_must_fit_its_own_model_options_checked_on_meta(tmp_path, monkeypatch):
    state = get_model("mlp", num_classes=10, in_channels=1, image_size=32).state_dict()
    fits = _zoo_checkpoint(state, tmp_path / "fits.ckpt", name="mlp", num_classes=10, in_channels=1, image_size=32)
    assert load_pretrained(str(fits)).model_options == {"num_classes": 10, "in_channels": 1, "image_size": 32}

    options = {"name": "mlp", "num_classes": 10, "in_channels": 1}
    edited = _zoo_checkpoint(state, tmp_path / "edited.ckpt", **options, image_size=3000)
    with pytest.raises(WeightsError) as err:
        load_pretrained(str(edited))
    assert f"{edited.resolve()}: its weights do not fit the network its hyperparameters describe" in str(err.value)
    assert "features.1.0.weight is (256, 1024) in its weights, (256, 9000000) by its hyperparameters" in str(err.value)

    # Options this zoo cannot build from are not the check's to judge: the builder says so if it is asked.
    odd = _zoo_checkpoint(state, tmp_path / "odd.ckpt", name="mlp", num_classes=10, widht=3)
    assert load_pretrained(str(odd)).model_options == {"num_classes": 10, "widht": 3}
    missing = _zoo_checkpoint({k: v for k, v in state.items() if k != "classifier.bias"}, tmp_path / "m.ckpt",
                              name="mlp", num_classes=10, in_channels=1, image_size=32)  # fmt: skip
    with pytest.raises(WeightsError, match=r"\(classifier.bias is missing from its weights\)"):
        load_pretrained(str(missing))
    extra = _zoo_checkpoint({**state, "spare": torch.zeros(1)}, tmp_path / "x.ckpt",
                            name="mlp", num_classes=10, in_channels=1, image_size=32)  # fmt: skip
    with pytest.raises(WeightsError, match=r"\(its weights hold spare, which the network has not\)"):
        load_pretrained(str(extra))


@pytest.mark.parametrize("suffix, kind", [(".pt2", "a torch.export program"), (".onnx", "an ONNX model")])
def test_exported_models_are_refused_as_finetuning_weights_without_being_opened(tmp_path, monkeypatch, suffix, kind):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"PK\x03\x04 anything")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("opened"))
    with pytest.raises(WeightsError) as err:
        load_pretrained(str(path))
    assert f"{path.resolve()} is {kind} ({suffix}), not a checkpoint or weights file" in str(err.value)


def test_a_zoo_checkpoint_whose_data_size_disagrees_with_its_network_is_refused(tmp_path):
    state = get_model("mlp", num_classes=10, in_channels=1, image_size=32).state_dict()
    ckpt = {
        "state_dict": {f"net.{k}": v for k, v in state.items()},
        "hyper_parameters": {"model": {"name": "mlp", "num_classes": 10, "in_channels": 1, "image_size": 32}},
        "datamodule_hyper_parameters": {"name": "digits", "image_size": 32},
        "DigitsDataModule": {"image_size": 32, "mean": [0.3], "std": [0.3]},
    }
    torch.save(ckpt, tmp_path / "fits.ckpt")
    assert load_pretrained(str(tmp_path / "fits.ckpt")).preprocessing.image_size == 32
    ckpt["DigitsDataModule"]["image_size"] = 3000  # would size the fine-tuning data, and an MLP built for it
    torch.save(ckpt, tmp_path / "edited.ckpt")
    with pytest.raises(WeightsError) as err:
        load_pretrained(str(tmp_path / "edited.ckpt"))
    assert str(err.value) == (
        f"cannot load pretrained weights: {(tmp_path / 'edited.ckpt').resolve()}: its network takes 32-pixel images "
        f"but its data settings say 3000 (a damaged or edited checkpoint?)"
    )


# --------------------------------------------------------------------------- names, downloads, messages

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_an_unknown_bare_name_lists_the_torchvision_weights_the_model_accepts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative names are no files here
    with pytest.raises(WeightsError) as err:
        load_pretrained("IMAGENET1K_V3", model="resnet50")
    assert str(err.value) == (
        "unknown weights 'IMAGENET1K_V3' for resnet50: not a file, "
        "and its weights are IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"
    )
    with pytest.raises(WeightsError) as err:
        load_pretrained("IMAGENET1K_V1", model="lenet5")
    assert str(err.value) == (
        "unknown weights 'IMAGENET1K_V1' for lenet5: not a file, and no weights are declared or registered for it"
    )
    with pytest.raises(WeightsError) as err:  # a path: the missing file is the error, not the names
        load_pretrained("IMAGENET1K_V3.pth", model="resnet50")
    assert str(err.value) == (
        f"cannot load pretrained weights: checkpoint not found: {tmp_path / 'IMAGENET1K_V3.pth'}. Expected {EXPECTED}"
    )


def test_downloads_go_to_torchvisions_cache_file_checked_against_the_hash_in_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def download(url, dst, **kwargs):
        calls.append((url, dst, kwargs))
        torch.save({"conv1.weight": torch.ones(1)}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    cache = tmp_path / "hub" / "checkpoints"
    r18 = load_pretrained("DEFAULT", model="resnet18")  # the cache folder does not exist yet: made
    r50 = load_pretrained("ResNet50_Weights.IMAGENET1K_V2")  # into the folder that now does
    assert calls == [
        ("https://download.pytorch.org/models/resnet18-f37072fd.pth", str(cache / "resnet18-f37072fd.pth"),
         {"hash_prefix": "f37072fd", "progress": False}),
        ("https://download.pytorch.org/models/resnet50-11ad3fa6.pth", str(cache / "resnet50-11ad3fa6.pth"),
         {"hash_prefix": "11ad3fa6", "progress": False}),
    ]  # fmt: skip
    assert r18.source == f"ResNet18_Weights.IMAGENET1K_V1 ({cache / 'resnet18-f37072fd.pth'})"
    assert r18.name == "ResNet18_Weights.IMAGENET1K_V1"
    # Each enum's own transforms: ResNet-50 V2 resizes to 232, not 256, before its 224 crop.
    assert r18.preprocessing == Preprocessing(224, *IMAGENET, resize_size=256)
    assert r50.preprocessing == Preprocessing(224, *IMAGENET, resize_size=232)
    assert torch.equal(r50.state_dict["conv1.weight"], torch.ones(1))
    load_pretrained("IMAGENET1K_V1", model="resnet18")
    assert len(calls) == 2  # cached now: read, not fetched again


def test_a_file_name_without_a_hash_is_fetched_unchecked_and_a_failed_download_names_the_place(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, **kwargs: calls.append(kwargs))
    # torchvision's quantized weights have no "-<hash>." in their file names
    url = "https://download.pytorch.org/models/quantized/resnet18_fbgemm_16fa66dd.pth"
    path = tmp_path / "resnet18_fbgemm_16fa66dd.pth"
    _fetch(url, path)
    assert calls == [{"hash_prefix": None, "progress": False}]

    def corrupt(url, dst, **kwargs):
        raise RuntimeError('invalid hash value (expected "16fa66dd", got "0badc0de")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", corrupt)
    with pytest.raises(WeightsError) as err:
        _fetch(url, path)
    assert str(err.value) == (
        f'could not download {url} (invalid hash value (expected "16fa66dd", got "0badc0de")). '
        f"Without network access, download it elsewhere and place it at {path}"
    )


def test_a_cached_torchvision_file_that_is_not_a_state_dict_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = find_weights("ResNet18_Weights.IMAGENET1K_V1", None).file()
    path.parent.mkdir(parents=True)
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError) as err:
        load_pretrained("ResNet18_Weights.IMAGENET1K_V1", download=False)
    assert str(err.value) == (
        f"{path.resolve()} is not a state_dict: expected a mapping of parameter names to tensors "
        f"(or a zoo checkpoint with a 'state_dict'), found list"
    )


def _trained(path: Path, **entries) -> Path:
    """A checkpoint shaped like zoo-train's: LeNet-5 weights under ``net.``, Lightning's
    counters, and the data module's ``entries`` (its hyper-parameters and its state)."""
    state = get_model("lenet5").state_dict()
    torch.save({
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"net.{k}": v for k, v in state.items()},
        "hyper_parameters": {"model": {"name": "lenet5", "num_classes": 10}},
        **entries,
    }, path)  # fmt: skip
    return path


def test_a_checkpoints_data_state_wins_over_its_hyper_parameters_which_fill_what_it_lacks(tmp_path):
    both = _trained(
        tmp_path / "both.ckpt",
        datamodule_hyper_parameters={"name": "digits", "image_size": 28, "mean": [0.1], "std": [0.2]},
        DigitsDataModule={"image_size": 32, "mean": [0.3], "std": [0.4]},
    )
    assert load_pretrained(str(both)).preprocessing == Preprocessing(32, (0.3,), (0.4,))
    # No state with all three facts (a data module that keeps none): the hyper-parameters, where set.
    hparams = _trained(tmp_path / "hparams.ckpt", datamodule_hyper_parameters={"name": "digits", "image_size": 28})
    assert load_pretrained(str(hparams)).preprocessing == Preprocessing(28, None, None)
    assert load_pretrained(str(_trained(tmp_path / "none.ckpt"))).preprocessing == Preprocessing()


def test_a_checkpoint_whose_model_name_is_not_a_string_is_left_to_whoever_builds_it(tmp_path):
    state = get_model("mlp", num_classes=10, in_channels=1, image_size=32).state_dict()
    odd = _zoo_checkpoint(state, tmp_path / "odd.ckpt", name=["mlp"], num_classes=10)  # an edited file
    assert load_pretrained(str(odd)).model_name == ["mlp"]


# --------------------------------------------------------------------------- fitting, message by message


class _Tensors(torch.nn.Module):
    """A network that is only named parameters of the given shapes: key counts and shapes chosen exactly."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        super().__init__()
        for name, shape in shapes.items():
            self.register_parameter(name, torch.nn.Parameter(torch.zeros(shape)))


def _ones(*names: str) -> dict[str, torch.Tensor]:
    return {name: torch.ones(1) for name in names}


def test_missing_and_unexpected_keys_are_counted_and_listed_up_to_eight():
    ten = _Tensors({f"p{i}": (1,) for i in range(10)})
    with pytest.raises(WeightsError) as err:  # missing keys alone
        load_into(ten, Pretrained("w.pth", _ones("p0")))
    assert str(err.value) == (
        "w.pth does not fit _Tensors: 9 missing keys [p1, p2, p3, p4, p5, p6, p7, p8, ... (1 more)], "
        "0 unexpected keys []. Expected the weights of the same architecture"
    )
    eight = _ones("p0", *(f"q{i}" for i in range(8)))
    with pytest.raises(WeightsError) as err:  # unexpected keys alone, from a zoo checkpoint
        load_into(_Tensors({"p0": (1,)}), Pretrained("run.ckpt", eight, model_name="lenet5"))
    assert str(err.value) == (
        "run.ckpt (a checkpoint of 'lenet5') does not fit _Tensors: 0 missing keys [], "
        "8 unexpected keys [q0, q1, q2, q3, q4, q5, q6, q7]. Expected the weights of the same architecture"
    )
    with pytest.raises(WeightsError) as err:
        load_into(ten, Pretrained("w.pth", _ones(*(f"q{i}" for i in range(20)))))
    assert "10 missing keys [p0, p1, p2, p3, p4, p5, p6, p7, ... (2 more)], 20 unexpected keys " in str(err.value)
    assert "[q0, q1, q2, q3, q4, q5, q6, q7, ... (12 more)]. Expected" in str(err.value)


def test_shape_mismatches_name_the_first_and_count_the_others_outside_image_models():
    net = _Tensors({"a": (2,), "b": (3,), "c": (4,)})
    weights = {"a": torch.ones(5), "b": torch.ones(3), "c": torch.ones(4)}
    with pytest.raises(WeightsError) as err:
        load_into(net, Pretrained("w.pth", weights))
    assert str(err.value) == "w.pth does not fit _Tensors: a has shape (5,) in the weights and (2,) in the model"
    first = "w.pth does not fit _Tensors: a has shape (5,) in the weights and (2,) in the model"
    for more, wrong in [(1, {"c": torch.ones(1)}), (2, {"b": torch.ones(7), "c": torch.ones(1, 4)})]:
        with pytest.raises(WeightsError) as err:
            load_into(net, Pretrained("w.pth", {**weights, **wrong}))
        assert str(err.value) == f"{first} ({more} more mismatches)"
    # No head to reset outside image models: everything loads, strictly.
    assert load_into(net, Pretrained("w.pth", {**weights, "a": torch.full((2,), 3.0)}), reset_head=True) == []
    assert torch.equal(net.a, torch.full((2,), 3.0)) and torch.equal(net.c, torch.ones(4))


def test_adapt_input_channels_sums_to_one_channel_and_spreads_one_over_many():
    rgb = torch.arange(4 * 3 * 3 * 2, dtype=torch.float64).reshape(4, 3, 3, 2)  # (out, c, kh, kw), all different
    assert torch.equal(adapt_input_channels(rgb, 1), rgb[:, :1] + rgb[:, 1:2] + rgb[:, 2:])
    gray = rgb[:, :1] + 1
    for channels in (2, 3):
        spread = adapt_input_channels(gray, channels)
        assert torch.equal(spread, torch.cat([gray] * channels, 1) / channels)
        # the identity read the other way: c gray copies through the spread kernels = the gray network
        images = torch.randn(2, 1, 5, 6, dtype=torch.float64)
        conv = torch.nn.functional.conv2d
        torch.testing.assert_close(conv(images.repeat(1, channels, 1, 1), spread), conv(images, gray))
    for have, want in [(3, 2), (2, 3)]:
        with pytest.raises(WeightsError) as err:
            adapt_input_channels(rgb[:, :have], want)
        assert str(err.value) == f"cannot adapt a first conv with {have} input channels to {want}"


def test_lenet5_rgb_weights_are_summed_for_gray_data_by_default_and_repeat_is_refused_in_one_line(tmp_path):
    rgb = get_model("lenet5", in_channels=3)
    path = _save(rgb.state_dict(), tmp_path / "rgb.pth")
    gray = get_model("lenet5", in_channels=1)
    assert load_into(gray, load_pretrained(str(path))) == []
    assert torch.equal(gray.c1[0].weight, rgb.c1[0].weight.sum(1, keepdim=True))
    with pytest.raises(WeightsError) as err:  # 5x5 kernels: the channel counts are not the kernel's sides
        load_into(get_model("lenet5", in_channels=1), load_pretrained(str(path)), adapt_channels="repeat")
    assert str(err.value) == (
        f"{path} expects 3-channel input and the data has 1; finetune.adapt_channels=repeat needs a data module "
        f"with a 'channels' option (digits), use finetune.adapt_channels=sum"
    )


def test_a_training_checkpoint_that_names_code_to_import_is_refused_as_weights(tmp_path):
    """A ``.ckpt`` is read as a training checkpoint: hyperparameters naming an import target
    are refused before any weight is used."""
    net = get_model("lenet5", num_classes=10)
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"model": {"name": "lenet5", "_target_": "os.system"}}}, path)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"_target_"):
        load_pretrained(str(path))
