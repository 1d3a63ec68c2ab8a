"""The weights table (:mod:`zoo.models.weights`): what each model declares, the names that
resolve, the evaluation transform against torchvision's presets, and a user's own weights
registered by a call or a YAML file and seen by every reader of the table."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.models import get_model_weights

import zoo
from tests.helpers import QUIET, compose_config, run_main
from zoo.cli.train import train
from zoo.data.digits import split_indices
from zoo.errors import ConfigError, UnknownNameError
from zoo.models.factory import DECLARED_WEIGHTS
import zoo.models.weights as weights_module
from zoo.models.weights import (
    Preprocessing, WeightsError, find_weights, pretrained_config, register_weights, unregister_weights,
    weights_from_yaml,
)  # fmt: skip


@pytest.fixture
def registered():
    """Weights the test registers are taken out of the table again afterwards."""
    added: list[tuple[str, str]] = []

    def register(model: str, tag: str, file, **facts):
        entry = register_weights(model, tag, file, **facts)
        added.append((model, tag))
        return entry

    yield register
    for model, tag in added:
        unregister_weights(model, tag)


DIGITS = dict(image_size=16, mean=[0.3], std=[0.4])


# --------------------------------------------------------------------------- what the models declare


def test_the_models_torchvision_has_declare_its_enum_and_the_others_declare_nothing():
    def torchvision_enum(name: str) -> str | None:
        try:
            return get_model_weights(name).__name__
        except ValueError:
            return None

    expected = {name: enum for name in zoo.list_models() if (enum := torchvision_enum(name))}
    assert {name: source.enum for name, source in DECLARED_WEIGHTS.items()} == expected
    assert len(expected) == 32 and "vit_tiny" not in expected and "lenet5" not in expected


def test_a_pretrained_config_holds_the_default_weights_preprocessing_and_where_they_plug_in():
    cfg = pretrained_config("resnet50")
    assert (cfg.input_size, cfg.interpolation, cfg.crop_pct) == (224, "bilinear", round(224 / 232, 4))
    assert (cfg.mean, cfg.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (cfg.first_conv, cfg.classifier) == ("conv1", "fc")
    assert [w.member for w in cfg.weights] == ["IMAGENET1K_V1", "IMAGENET1K_V2"]
    vit = pretrained_config("vit_b_16")
    assert (vit.input_size, vit.first_conv, vit.classifier) == (224, "conv_proj", "heads.head")
    lenet = pretrained_config("lenet5")  # no weights: its own input size, nothing about normalisation
    assert (lenet.model, lenet.input_size, lenet.mean, lenet.interpolation, lenet.crop_pct, lenet.weights) == (
        "lenet5", 32, None, None, None, ())
    assert (lenet.first_conv, lenet.classifier) == ("c1.0", "classifier.1")
    seq = pretrained_config("transformer_small")
    assert (seq.first_conv, seq.classifier, seq.weights) == (None, None, ())


def test_a_torchvision_entry_lives_in_torch_hubs_cache_as_torchvision_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    entry = find_weights("ResNet18_Weights.IMAGENET1K_V1", None)
    assert (entry.is_url, entry.file()) == (True, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")


def test_names_resolve_in_full_by_their_short_name_for_the_model_and_default_to_the_marked_one():
    assert find_weights("IMAGENET1K_V1", "resnet50").name == "ResNet50_Weights.IMAGENET1K_V1"
    assert find_weights("DEFAULT", "resnet50").name == "ResNet50_Weights.IMAGENET1K_V2"  # the member it aliases
    full = find_weights("ResNet18_Weights.IMAGENET1K_V1", None)
    assert (full.name, full.model) == ("ResNet18_Weights.IMAGENET1K_V1", "resnet18")  # the zoo model declaring it
    assert find_weights("IMAGENET1K_V1", None) is None  # no model: a short name means nothing
    assert find_weights("IMAGENET1K_V2", "resnet18") is None  # resnet50's member, not resnet18's
    assert find_weights("IMAGENET1K_V1", "lenet5") is None
    assert find_weights("ResNet18_Weights.V9", None) is None
    assert find_weights("IMAGENET1K_V1", "resnet99") is None  # no such model: no weights, no error
    v1, v2 = find_weights("ResNet50_Weights.IMAGENET1K_V1", None), find_weights("ResNet50_Weights.IMAGENET1K_V2", None)
    assert (v1.is_default, v2.is_default) == (False, True)
    # Weights of a torchvision model the zoo does not have belong to the model that asked, if any.
    assert find_weights("MobileNet_V2_Weights.IMAGENET1K_V1", "resnet18").model == "resnet18"
    assert find_weights("MobileNet_V2_Weights.IMAGENET1K_V1", None).model == ""


# --------------------------------------------------------------------------- torchvision's entries


def _models_with_weights() -> list[str]:
    return [name for name in zoo.list_models() if zoo.list_weights(name)]


def test_list_weights_is_torchvisions_metadata_for_every_model_that_has_weights():
    names = _models_with_weights()
    assert len(names) >= 30 and {"alexnet", "resnet50", "vit_h_14", "efficientnet_b7"} <= set(names)
    for name in names:
        enum = get_model_weights(name)
        infos = zoo.list_weights(name)
        assert [w.name for w in infos] == [f"{enum.__name__}.{m.name}" for m in enum]
        for info, weights in zip(infos, enum):
            meta, preset = weights.meta, weights.transforms()
            pre = info.preprocessing
            assert (info.dataset, dict(info.metrics)) == ("ImageNet-1K", meta["_metrics"]["ImageNet-1K"])
            assert (info.gflops, info.file_size_mb, info.num_params) == (meta["_ops"], meta["_file_size"], meta["num_params"])
            assert (pre.resize_size, pre.image_size) == (preset.resize_size[0], preset.crop_size[0])
            assert (pre.mean, pre.std, pre.interpolation) == (tuple(preset.mean), tuple(preset.std), preset.interpolation.value)
            assert (info.recipe, info.source, info.is_default) == (meta["recipe"], weights.url, weights is enum.DEFAULT)
            assert (info.model, info.license, info.sha256) == (name, meta.get("license"), weights.url.rsplit("-", 1)[1][:-4])
    # Published figures (torchvision's model table): ResNet-50 V2 and ViT-B/16 SWAG end-to-end at 384 px.
    v2 = next(w for w in zoo.list_weights("resnet50") if w.member == "IMAGENET1K_V2")
    assert (v2.metrics["acc@1"], v2.metrics["acc@5"], v2.preprocessing.resize_size, v2.preprocessing.image_size) == (80.858, 95.434, 232, 224)
    assert v2.is_default and v2.num_classes == 1000
    swag = next(w for w in zoo.list_weights("vit_b_16") if w.member == "IMAGENET1K_SWAG_E2E_V1")
    assert (swag.metrics["acc@1"], swag.preprocessing.image_size, swag.preprocessing.interpolation) == (85.304, 384, "bicubic")
    assert swag.license == "https://github.com/facebookresearch/SWAG/blob/main/LICENSE"
    assert zoo.list_weights("lenet5") == []


def test_zoo_models_lists_the_weights_with_their_published_accuracy():
    result = run_main("zoo-models", "--weights", "resnet50", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "IMAGENET1K_V2" in line)
    assert "(DEFAULT)" in row and "80.858" in row and "95.434" in row and "232->224 bilinear" in row


# --------------------------------------------------------------------------- the evaluation transform


@pytest.mark.parametrize(("name", "weights"), [("resnet50", "IMAGENET1K_V2"), ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1"),
                                               ("efficientnet_b3", "DEFAULT"), ("alexnet", "DEFAULT")])  # fmt: skip
def test_the_transform_is_torchvisions_preset_to_the_bit_for_pil_images_and_uint8_tensors(name, weights):
    preset = get_model_weights(name)[weights].transforms()  # bilinear and bicubic, 224..384 crops
    transform = zoo.weights_transforms(name, weights)
    image = Image.new("RGB", (300, 260), (200, 30, 90))
    tensor = torch.randint(0, 256, (3, 300, 260), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for x in (image, tensor):
        out = transform(x)
        assert out.shape == (3, *preset.crop_size * 2) and torch.equal(out, preset(x))


def test_the_default_transform_is_the_default_weights():
    expected = get_model_weights("resnet50").DEFAULT.transforms()
    image = Image.new("RGB", (300, 260), (10, 200, 90))
    assert torch.equal(zoo.weights_transforms("resnet50")(image), expected(image))


def test_an_unknown_name_lists_the_names_the_model_has():
    with pytest.raises(WeightsError, match="unknown weights 'V9' for resnet50: not a file, and its weights are "
                                           "IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT$"):  # fmt: skip
        zoo.weights_transforms("resnet50", "V9")
    with pytest.raises(WeightsError, match="for lenet5: not a file, and no weights are declared or registered for it"):
        zoo.weights_transforms("lenet5")
    for facts in (Preprocessing(32), Preprocessing(32, mean=(0.5,)), Preprocessing(32, std=(0.5,)), Preprocessing(None, (0.5,), (0.5,))):
        with pytest.raises(WeightsError, match="do not say how their images were fed"):
            facts.transforms()


# --------------------------------------------------------------------------- a user's own weights


def test_registered_weights_are_named_in_full_or_by_tag_and_join_the_models_listing(tmp_path, registered):
    entry = registered("lenet5", "digits", tmp_path / "w.pth", num_classes=10, dataset="digits",
                       metrics={"acc@1": 97.5}, default=True, **DIGITS)  # fmt: skip
    assert (entry.name, entry.member, entry.source, entry.is_url) == ("lenet5.digits", "digits", str(tmp_path / "w.pth"), False)
    assert entry.file() == tmp_path / "w.pth"
    assert zoo.list_weights("lenet5") == [entry]
    assert find_weights("digits", "lenet5") is entry and find_weights("DEFAULT", "lenet5") is entry
    assert find_weights("lenet5.digits", None) is entry
    assert find_weights("lenet5.digits", "mlp") is entry  # in full, whichever model asks (load_into then checks the fit)
    assert find_weights("digits", "mlp") is None
    cfg = pretrained_config("lenet5")
    assert (cfg.input_size, cfg.mean, cfg.std, cfg.crop_pct, cfg.weights) == (16, (0.3,), (0.4,), 1.0, (entry,))
    assert registered("lenet5", "digits", tmp_path / "w.pth", num_classes=10, dataset="digits",
                      metrics={"acc@1": 97.5}, default=True, **DIGITS) == entry  # the same again: no change  # fmt: skip
    unregister_weights("lenet5", "digits")
    assert zoo.list_weights("lenet5") == []


@pytest.mark.parametrize(("model", "tag", "facts", "message"), [
    ("lenet6", "t", {}, "Unknown model 'lenet6'. Did you mean: lenet5"),
    ("lenet5", "a b", {}, "weights tag 'a b': use letters, digits"),
    ("lenet5", "t", {"image_size": 0}, "image_size must be a positive whole number of pixels, not 0"),
    ("lenet5", "t", {"resize_size": 2.5}, "resize_size must be a positive whole number of pixels, not 2.5"),
    ("lenet5", "t", {"mean": [0.1, 0.2]}, r"mean and std need one value per channel, std above 0 \(mean \[0.1, 0.2\], std \[0.4\]\)"),
    ("lenet5", "t", {"std": [0.0]}, "std above 0"),
    ("lenet5", "t", {"mean": "gray"}, "mean must be a number per channel"),
    ("lenet5", "t", {"interpolation": "area"}, "interpolation 'area' is not one of nearest, bilinear, bicubic"),
    ("lenet5", "t", {"metrics": {"acc@1": "high"}}, "metrics must map names to numbers"),
    ("lenet5", "t", {"sha256": "xyz"}, "sha256 must be the file's hex digest"),
    ("resnet18", "IMAGENET1K_V1", {}, r"resnet18 already has weights called 'IMAGENET1K_V1' \(ResNet18_Weights.IMAGENET1K_V1\)"),
    ("resnet18", "mine", {"default": True}, "resnet18's DEFAULT weights are ResNet18_Weights.IMAGENET1K_V1 already"),
])  # fmt: skip
def test_a_registration_that_cannot_be_used_is_refused_in_one_line(tmp_path, registered, model, tag, facts, message):
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        registered(model, tag, tmp_path / "w.pth", **{**DIGITS, **facts})
    assert zoo.list_weights("lenet5") == []


def test_every_fact_of_a_registration_is_kept(tmp_path, registered):
    entry = registered("lenet5", "mine", tmp_path / "w.pth", image_size=1, resize_size=1, mean=0.5, std=(0.25,),
                       interpolation="nearest", num_classes=7, dataset="my set", metrics={"acc@1": 1, "top5": 2.5},
                       sha256="ab" * 32, recipe="docs/recipe.md", license="CC-BY-4.0", default=True)  # fmt: skip
    assert (entry.num_classes, entry.dataset, dict(entry.metrics), entry.recipe, entry.license) == (
        7, "my set", {"acc@1": 1, "top5": 2.5}, "docs/recipe.md", "CC-BY-4.0")
    assert (entry.preprocessing, entry.sha256, entry.is_default) == (Preprocessing(1, (0.5,), (0.25,), 1, "nearest"), "ab" * 32, True)


def test_without_a_default_the_pretrained_config_reads_the_first_weights(tmp_path, registered):
    registered("lenet5", "a", tmp_path / "a.pth", image_size=20, resize_size=25, mean=[0.1], std=[0.2])
    registered("lenet5", "b", tmp_path / "b.pth", image_size=28, mean=[0.3], std=[0.4])
    cfg = pretrained_config("lenet5")
    assert (cfg.input_size, cfg.mean, cfg.crop_pct, cfg.interpolation) == (20, (0.1,), 0.8, "bilinear")


def test_taking_weights_out_leaves_the_table_as_it_was(tmp_path, registered):
    unregister_weights("mlp", "never-registered")  # nothing to take out: nothing happens
    registered("mlp", "a", tmp_path / "a.pth", **DIGITS)
    kept = registered("mlp", "b", tmp_path / "b.pth", **DIGITS)
    unregister_weights("mlp", "a")
    assert zoo.list_weights("mlp") == [kept]  # only the one named
    unregister_weights("mlp", "b")
    assert zoo.list_weights("mlp") == [] and "mlp" not in weights_module._REGISTERED
    assert registered("mlp", "a", tmp_path / "a.pth", **DIGITS).name == "mlp.a"  # and it registers again


@pytest.mark.parametrize("mean", [[], ["0.3"], [True], "0.3", None, {0.3}])
def test_a_mean_that_is_not_a_number_per_channel_is_refused(tmp_path, registered, mean):
    with pytest.raises(ConfigError, match="mean must be a number per channel"):
        registered("lenet5", "t", tmp_path / "w.pth", image_size=16, mean=mean, std=[] if mean == [] else [0.4])


def test_a_second_registration_under_a_taken_name_is_refused(tmp_path, registered):
    registered("lenet5", "digits", tmp_path / "a.pth", **DIGITS)
    with pytest.raises(ConfigError, match=r"lenet5 already has weights called 'digits' \(lenet5.digits\)"):
        registered("lenet5", "digits", tmp_path / "b.pth", **DIGITS)


def test_a_registered_file_is_checked_against_its_sha256(tmp_path, registered, one_thread):
    path = tmp_path / "lenet5.pth"
    torch.save(zoo.get_model("lenet5").state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    registered("lenet5", "good", path, sha256=digest.upper(), **DIGITS)
    registered("lenet5", "prefix", path, sha256=digest[:10], **DIGITS)
    registered("lenet5", "other", path, sha256="0" * 64, **DIGITS)
    registered("lenet5", "gone", tmp_path / "missing.pth", **DIGITS)
    for tag in ("good", "prefix"):
        torch.testing.assert_close(zoo.create_model("lenet5", weights=tag).state_dict(), zoo.get_model("lenet5").state_dict()
                                   | torch.load(path, weights_only=True))  # fmt: skip
    with pytest.raises(WeightsError, match=rf"lenet5.other: {path} has sha256 {digest[:16]}\.\.\., not the registered 0000"):
        zoo.create_model("lenet5", weights="other")
    with pytest.raises(WeightsError, match=f"weights lenet5.gone: the registered file {tmp_path / 'missing.pth'} does not exist"):
        zoo.create_model("lenet5", weights="gone")


def _yaml(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_yaml_declarations_in_the_working_directory_join_the_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _yaml(tmp_path / "configs" / "weights", "lenet5_digits.yaml", (
        "model: lenet5\nfile: ../../w.safetensors\nimage_size: 16\nresize_size: 18\nmean: 0.3\nstd: [0.4]\n"
        "interpolation: bicubic\nnum_classes: 10\ndataset: digits\nmetrics: {acc@1: 97.5}\nlicense: MIT\n"
    ))  # fmt: skip
    (entry,) = zoo.list_weights("lenet5")
    assert (entry.name, entry.source, entry.num_classes, entry.license) == (
        "lenet5.lenet5_digits", str(tmp_path / "configs" / "weights" / "../../w.safetensors"), 10, "MIT")
    assert entry.file().resolve() == tmp_path / "w.safetensors"
    assert entry.preprocessing == Preprocessing(16, (0.3,), (0.4,), 18, "bicubic")
    assert dict(entry.metrics) == {"acc@1": 97.5} and not entry.is_default


def test_a_yaml_declaration_names_its_tag_and_the_packages_configs_are_read_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    monkeypatch.setattr(weights_module, "config_dir", lambda: str(tmp_path / "package"))
    _yaml(tmp_path / "package" / "weights", "any_name.yaml",
          "model: lenet5\ntag: digits_v2\nfile: w.pth\nimage_size: 16\nmean: [0.3]\nstd: [0.4]\ndefault: true\n")
    (entry,) = zoo.list_weights("lenet5")
    assert (entry.name, entry.is_default, entry.file()) == ("lenet5.digits_v2", True, tmp_path / "package" / "weights" / "w.pth")


def test_a_yaml_declaration_that_takes_a_registered_name_is_refused(tmp_path, monkeypatch, registered):
    monkeypatch.chdir(tmp_path)
    registered("lenet5", "digits", tmp_path / "a.pth", **DIGITS)
    _yaml(tmp_path / "configs" / "weights", "digits.yaml", "model: lenet5\nfile: b.pth\nimage_size: 16\nmean: [0.3]\nstd: [0.4]\n")
    with pytest.raises(ConfigError, match=r"lenet5 already has weights called 'digits' \(lenet5.digits\)"):
        zoo.list_weights("lenet5")


@pytest.mark.parametrize(("text", "message"), [
    ("model: lenet5\nfile: w.pth\nimage_size: 16\n", "bad.yaml: missing mean, std$"),
    ("model: lenet5\nfile: w.pth\nimage_size: 16\nmean: [0.3]\nstd: [0.4]\ncolour: red\nsize: 3\n",
     "unknown keys colour, size; the keys are model, tag, file, image_size, mean, std, resize_size,"),
    ("- model: lenet5\n", "a weights declaration is a mapping of model, tag, file"),
    ("model: [lenet5\n", "cannot read the weights declaration .*bad.yaml: while parsing"),
    ("model: lenet5\nfile: w.pth\nimage_size: 16\nmean: [0.3]\nstd: [-1]\n", "bad.yaml: weights lenet5.bad: mean and std"),
])  # fmt: skip
def test_a_yaml_declaration_that_cannot_be_used_names_its_file_in_one_line(tmp_path, text, message):
    path = _yaml(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError, match=message) as err:
        weights_from_yaml(path)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- end to end: vit_tiny on digits


def _digits_test_images() -> tuple[list[torch.Tensor], torch.Tensor]:
    """The digits test split (configs/data/digits.yaml's fractions and seed) as uint8 images, as a user has them."""
    digits = load_digits()
    labels = torch.tensor(digits.target)
    _, _, test = split_indices(labels, 0.1, 0.2, 0)
    images = torch.tensor(digits.images[test] * 255 / 16).round().to(torch.uint8).unsqueeze(1)  # (N, 1, 8, 8)
    return list(images), labels[test]


def _accuracy(net: torch.nn.Module, transform, images: list[torch.Tensor], labels: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = net.eval()(torch.stack([transform(x) for x in images])).argmax(1)
    return 100 * (predicted == labels).float().mean().item()


VIT = ["model=vit_tiny", "model.depth=1", "model.patch_size=4", "+model.hidden_dim=32", "+model.num_heads=2",
       "+model.mlp_dim=64", "model.stochastic_depth_prob=0", "data.image_size=16", "data.max_shift=0", "optim=adam",
       "optim.lr=0.01", "sched=none"]  # fmt: skip


def test_a_users_vit_tiny_weights_are_seen_by_create_model_list_weights_zoo_models_and_zoo_train(
    tmp_path, monkeypatch, one_thread
):
    """A ViT-Tiny trained here, declared in configs/weights/ with its transform and test
    accuracy: each reader of the table finds it, and the declared transform classifies
    the test images at the declared accuracy (wrong mean or std would not)."""
    run = tmp_path / "run"
    train(compose_config("train", run, [*VIT, "data.batch_size=32", "trainer.max_epochs=8", *QUIET]))
    metrics = json.loads((run / "metrics.json").read_text())
    ran = OmegaConf.load(run / "config.yaml").data  # with the mean and std the data module computed
    (mean,), (std,) = ran.mean, ran.std
    assert 0.25 < mean < 0.35 and 0.25 < std < 0.4  # the training split's statistics
    acc = 100 * metrics["test"]["test/acc"]
    assert acc > 70  # a network that has learnt something: a wrong transform shows
    monkeypatch.chdir(tmp_path)
    _yaml(tmp_path / "configs" / "weights", "digits.yaml", (
        f"model: vit_tiny\nfile: ../../run/checkpoints/{Path(metrics['checkpoint']).name}\nimage_size: 16\n"
        f"mean: [{mean}]\nstd: [{std}]\nnum_classes: 10\ndataset: digits test split\nmetrics: {{acc@1: {acc}}}\n"
    ))  # fmt: skip

    (entry,) = zoo.list_weights("vit_tiny")
    assert (entry.name, entry.metrics["acc@1"], entry.preprocessing.mean) == ("vit_tiny.digits", acc, (mean,))
    listing = run_main("zoo-models", "--weights", "vit_tiny", env={"COLUMNS": "200"})
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if "digits" in line)
    assert "vit_tiny" in row and f"{acc:.3f}" in row and "16->16 bilinear" in row

    net = zoo.create_model("vit_tiny", weights="digits")  # built from the checkpoint's own options
    images, labels = _digits_test_images()
    assert _accuracy(net, zoo.weights_transforms("vit_tiny", "digits"), images, labels) == pytest.approx(acc, abs=1.5)

    tuned = tmp_path / "tuned"
    train(compose_config("train", tuned, [*VIT, "finetune=freeze", "finetune.weights=digits", "trainer.max_epochs=1", *QUIET]))
    tuned_metrics = json.loads((tuned / "metrics.json").read_text())
    assert tuned_metrics["status"] == "finished"
    tuned_data = OmegaConf.load(tuned / "config.yaml").data  # fed as the weights were (finetune.preprocessing=pretrained)
    assert (list(tuned_data.mean), list(tuned_data.std), tuned_data.image_size) == ([mean], [std], 16)
