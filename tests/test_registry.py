import pytest

import zoo
from zoo.errors import UnknownNameError
from zoo.registry import Registry


def test_register_get_and_list_with_pattern():
    reg = Registry("widget")
    reg.register("alpha")(lambda **kw: ("alpha", kw))
    reg.register("alpine")(lambda **kw: ("alpine", kw))
    reg.register("beta")(lambda **kw: ("beta", kw))
    assert reg.names() == ["alpha", "alpine", "beta"]
    assert reg.names("al*") == ["alpha", "alpine"]
    assert reg.build("beta", x=1) == ("beta", {"x": 1})


def test_duplicate_name_is_an_error():
    reg = Registry("widget")
    reg.register("alpha")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(lambda: 2)


def test_unknown_name_lists_close_matches_and_choices():
    with pytest.raises(UnknownNameError) as info:
        zoo.get_model("lenet")
    message = str(info.value)
    assert "Did you mean: lenet5" in message
    assert "mlp" in message  # the full list of choices follows


def test_builtin_families_are_registered():
    assert {"lenet5", "mlp"} <= set(zoo.list_models())
    assert zoo.list_models("lenet*") == ["lenet5"]


def test_registering_a_duplicate_model_name_fails():
    with pytest.raises(ValueError, match="already registered"):

        @zoo.register_model
        def lenet5():  # noqa: F811
            raise AssertionError
