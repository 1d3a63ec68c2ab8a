"""The model API: ``zoo.create_model`` with each kind of weights, ``zoo.list_weights`` and
``zoo.weights_transforms`` against torchvision's own metadata, ``zoo.load``, and a ViT
fine-tuned at another resolution than its weights'."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torchvision.models.vision_transformer import interpolate_embeddings

import zoo
from tests.helpers import QUIET, compose_config
from zoo.cli.train import train
from zoo.errors import ConfigError
from zoo.models.weights import WeightsError, find_weights
from zoo.inference import classify
from zoo.models.vit import interpolate_pos_embedding

TINY_VIT = {"patch_size": 4, "depth": 1}  # vit_tiny's widths, one block: quick on the CPU


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def _checkpoint(net: torch.nn.Module, path, **model_options) -> None:
    """A file shaped as ``zoo-train`` writes them: the task's ``net.*`` tensors and plain hyperparameters."""
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"model": model_options}}, path)  # fmt: skip


@pytest.mark.parametrize("kind", [".pth", ".safetensors", ".ckpt"])
def test_create_model_loads_each_file_format_into_the_same_network(tmp_path, kind, one_thread):
    source = zoo.get_model("lenet5", num_classes=10)
    path = tmp_path / f"lenet5{kind}"
    if kind == ".pth":
        torch.save(source.state_dict(), path)
    elif kind == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        _checkpoint(source, path, name="lenet5", num_classes=10, in_channels=None)
    # The class count comes from a checkpoint's options; a bare state_dict needs it given.
    options = {} if kind == ".ckpt" else {"num_classes": 10}
    created = zoo.create_model("lenet5", weights=str(path), **options)
    _same_outputs(created, source, torch.randn(2, 1, 32, 32))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A torchvision ResNet-18 (random weights) where torchvision's cache keeps IMAGENET1K_V1."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
    path = find_weights("ResNet18_Weights.IMAGENET1K_V1", None).file()
    path.parent.mkdir(parents=True)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), path)
    return reference


@pytest.mark.parametrize("spec", [{"weights": "ResNet18_Weights.IMAGENET1K_V1"}, {"weights": "IMAGENET1K_V1"},
                                  {"weights": "DEFAULT"}, {"pretrained": True}])  # fmt: skip
def test_torchvision_weights_load_from_the_hub_cache_by_any_of_their_names(hub_cache, spec, one_thread):
    _same_outputs(zoo.create_model("resnet18", **spec), hub_cache, torch.randn(2, 3, 64, 64))


def test_a_new_class_count_keeps_everything_but_a_fresh_head(tmp_path, one_thread):
    source = zoo.get_model("lenet5", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    created = zoo.create_model("lenet5", weights=str(tmp_path / "w.pth"), num_classes=7)
    head = created.head_keys()
    assert created.num_classes == 7 and created.get_classifier().out_features == 7
    kept = {k: v for k, v in created.state_dict().items() if k not in head}
    assert kept.keys() == source.state_dict().keys() - head
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in kept.items())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        features = [m.eval().forward_head(m.forward_features(x), pre_logits=True) for m in (created, source)]
    torch.testing.assert_close(*features, rtol=0, atol=0)


def test_one_input_channel_from_rgb_weights_gives_the_rgb_network_on_a_replicated_gray_image(hub_cache, one_thread):
    created = zoo.create_model("resnet18", weights="DEFAULT", in_channels=1)
    gray = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(created.eval()(gray), hub_cache.eval()(gray.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("old, new", [(32, 48), (48, 32), (16, 64)])
def test_vit_position_embeddings_are_interpolated_as_torchvision_does(tmp_path, old, new):
    source = zoo.get_model("vit_tiny", image_size=old, num_classes=3, **TINY_VIT)
    with torch.no_grad():
        source.encoder.pos_embedding.normal_()  # every row different: a wrong layout shows
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    created = zoo.create_model("vit_tiny", weights=str(tmp_path / "vit.pth"), image_size=new, num_classes=3, **TINY_VIT)
    expected = interpolate_embeddings(new, 4, source.state_dict())["encoder.pos_embedding"]
    assert created.encoder.pos_embedding.shape == (1, (new // 4) ** 2 + 1, 192)
    torch.testing.assert_close(created.encoder.pos_embedding.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(created.encoder.pos_embedding[:, 0], source.encoder.pos_embedding[:, 0], rtol=0, atol=0)
    others = [k for k in source.state_dict() if k != "encoder.pos_embedding"]
    assert all(torch.equal(created.state_dict()[k], source.state_dict()[k]) for k in others)
    assert created(torch.randn(1, 3, new, new)).shape == (1, 3)


def test_interpolating_to_the_same_grid_changes_nothing():
    pos = torch.randn(1, 1 + 7 * 7, 8)
    torch.testing.assert_close(interpolate_pos_embedding(pos, 49), pos)


def test_the_command_line_fine_tunes_a_vit_at_another_resolution(tmp_path, one_thread):
    source = zoo.get_model("vit_tiny", image_size=32, num_classes=10, patch_size=4, depth=6)
    torch.save(source.state_dict(), tmp_path / "vit32.pth")
    cfg = compose_config("train", tmp_path / "run", [
        "model=vit_tiny", "model.image_size=48", "finetune=full", f"finetune.weights={tmp_path / 'vit32.pth'}",
        "trainer.max_epochs=1", "data.train_per_class=4", "sched=none", *QUIET,
    ])  # fmt: skip
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["image_size"] == 48
    assert ckpt["datamodule_hyper_parameters"]["image_size"] == 48  # the data follows the model's size
    assert ckpt["state_dict"]["net.encoder.pos_embedding"].shape == (1, 12 * 12 + 1, 192)


# --------------------------------------------------------------------------- bad input


def test_an_unknown_weights_name_lists_the_names_the_model_accepts(hub_cache):
    with pytest.raises(WeightsError, match=r"unknown weights 'IMAGENET1K_V9' for resnet18: not a file, and its "
                                           r"weights are IMAGENET1K_V1, DEFAULT"):  # fmt: skip
        zoo.create_model("resnet18", weights="IMAGENET1K_V9")
    with pytest.raises(WeightsError, match="unknown weights 'DEFAULT' for lenet5: not a file, and no weights are declared or registered"):
        zoo.create_model("lenet5", pretrained=True)


def test_weights_of_another_architecture_name_the_mismatching_keys(tmp_path):
    torch.save(zoo.get_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"does not fit ResNet: \d+ missing keys \[layer1\.0\.conv3\.weight"):
        zoo.create_model("resnet50", weights=str(tmp_path / "r18.pth"))
    torch.save(zoo.get_model("resnet18", in_channels=3).state_dict(), tmp_path / "r18.pth")
    wide = zoo.get_model("resnet18").state_dict()
    wide["layer1.0.conv1.weight"] = torch.zeros(64, 32, 3, 3)
    torch.save(wide, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match=r"layer1\.0\.conv1\.weight has shape \(64, 32, 3, 3\) in the weights and \(64, 64, 3, 3\)"):
        zoo.create_model("resnet18", weights=str(tmp_path / "wrong.pth"))


def test_a_vit_image_size_that_is_not_a_multiple_of_the_patch_size_says_so():
    with pytest.raises(ConfigError, match="image_size=100 is not a multiple of the patch size 16"):
        zoo.create_model("vit_b_16", image_size=100)


# --------------------------------------------------------------------------- zoo.load


def test_zoo_load_gives_the_network_its_transform_and_class_names(tmp_path, one_thread):
    run = tmp_path / "run"
    train(compose_config("train", run, ["model=mlp", "trainer.max_epochs=1", "sched=none", *QUIET]))
    trained = zoo.load(run / "checkpoints" / "last.ckpt")
    assert trained.classes == [str(i) for i in range(10)] and trained.vocabs is None
    images = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray((torch.rand(20, 20) * 255).to(torch.uint8).numpy()).save(path)
        images.append(path)
    with torch.no_grad():
        ours = [trained.classes[int(trained.net(trained.transform(Image.open(p))[None]).argmax())] for p in images]
    predictions, problems = classify(trained, images, top_k=1)
    assert not problems and ours == [p.names[0] for p in predictions]
    assert not trained.net.training


def test_zoo_load_gives_a_sequence_checkpoint_its_vocabularies(tmp_path, one_thread):
    run = tmp_path / "run"
    train(compose_config("train", run, ["data=reverse", "model=seq2seq_gru", "data.train_size=64", "data.val_size=16",
                                        "data.test_size=16", "trainer.max_epochs=1", "sched=none", *QUIET]))  # fmt: skip
    trained = zoo.load(run / "checkpoints" / "last.ckpt")
    src_vocab, tgt_vocab = trained.vocabs
    model = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["model"]
    assert (len(src_vocab), len(tgt_vocab)) == (model["src_vocab_size"], model["tgt_vocab_size"])
    assert src_vocab.decode(src_vocab.encode("abc")) == "abc"
    assert trained.transform is None and trained.classes is None


def test_torchvision_weights_missing_from_the_cache_name_the_file_to_place_and_download_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(WeightsError, match="ResNet50_Weights.IMAGENET1K_V2 are not in the cache: place "
                                           "https://download.pytorch.org/models/resnet50-11ad3fa6.pth at") as err:  # fmt: skip
        zoo.create_model("resnet50", weights="DEFAULT")
    assert str(expected) in str(err.value) and "download=True" in str(err.value)


def test_features_only_gives_the_trunk_of_the_loaded_weights(hub_cache, one_thread):
    backbone = zoo.create_model("resnet18", weights="DEFAULT", features_only=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = backbone.eval()(x)
        torch.testing.assert_close(maps[-1], torch.nn.Sequential(*list(hub_cache.children())[:-2]).eval()(x))


def test_a_checkpoint_whose_options_outgrow_its_weights_is_refused_before_create_model_builds_it(tmp_path, monkeypatch):
    import zoo.models.pretrained

    path = tmp_path / "edited.ckpt"
    _checkpoint(zoo.get_model("lenet5", num_classes=10), path, name="lenet5", num_classes=100_000_000)  # 33.6 GB

    def not_built(*args, **kwargs):
        raise AssertionError("create_model built the network the file describes before checking its weights")

    monkeypatch.setattr(zoo.models.pretrained, "get_model", not_built)
    with pytest.raises(WeightsError) as err:
        zoo.create_model("lenet5", weights=str(path))
    assert str(err.value) == (
        f"cannot load pretrained weights: {path.resolve()}: its weights do not fit the network its hyperparameters "
        f"describe (classifier.1.weight is (10, 84) in its weights, (100000000, 84) by its hyperparameters); "
        f"refusing to build it (a damaged or edited checkpoint?)"
    )


def test_download_true_fetches_missing_torchvision_weights_into_the_hub_cache(tmp_path, monkeypatch, one_thread):
    """The download itself is torch.hub's (never run here): it is asked for the weights' URL
    and the cache path, and the file it leaves is what loads."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    asked = []

    def download(url, dst, hash_prefix=None, progress=True):
        asked.append((url, Path(dst), hash_prefix))
        torch.save(reference.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    created = zoo.create_model("resnet18", weights="IMAGENET1K_V1", download=True)
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert asked == [(url, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth", "f37072fd")]
    _same_outputs(created, reference, torch.randn(1, 3, 64, 64))


def test_a_checkpoints_own_options_build_the_network_unless_it_is_of_another_model(tmp_path, one_thread):
    source = zoo.get_model("lenet5", num_classes=7)
    path = tmp_path / "seven.ckpt"
    _checkpoint(source, path, name="lenet5", num_classes=7)
    created = zoo.create_model("lenet5", weights=str(path))  # 7 classes from the file, not the default 10
    _same_outputs(created, source, torch.randn(2, 1, 32, 32))
    assert zoo.create_model("lenet5", weights=str(path), num_classes=3).classifier[-1].out_features == 3  # given wins


def test_features_only_keeps_the_stages_asked_for_and_names_a_model_without_them():
    backbone = zoo.create_model("resnet18", features_only=True, out_indices=(1, 3))
    assert backbone.out_indices == (1, 3)
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [64, 256]
    with pytest.raises(ValueError, match="model 'mlp' has no feature maps"):
        zoo.create_model("mlp", features_only=True)
