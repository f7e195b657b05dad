import pytest
import torch
from torch import nn

from robustlab.nn.blocks import CenterInputs, ZeroPad
from robustlab.nn.lipschitz import LAYER_FAMILIES, AOLLinear
from robustlab.nn.models import MODELS, ImageClassifier, create_model, model_kwargs
from robustlab.registry import UnknownNameError

SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}


def tiny_kwargs(name: str) -> dict:
    """The smallest settings each architecture allows, so that every model runs fast on CPU."""
    if name == "simpleconvnet":
        return {"width": 2}
    if name.startswith("lipmlp"):
        return {"depth": 1, "width": 16}
    if name == "liresnet":
        return {"width": 4, "depth": 1, "features": 16}
    return {"width": 4, "depth": 1}


def test_every_family_has_every_architecture():
    for family in LAYER_FAMILIES:
        for name in (
            f"lipconvnet-{family}",
            f"lipmlp-{family}",
            *(f"convnet-{s}-{family}" for s in ("xs", "s", "m", "l")),
        ):
            assert name in MODELS
    assert "simpleconvnet" in MODELS


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_and_runs_forward(name, shape):
    input_shape = SHAPES[shape]
    model = create_model(name, input_shape, 10, **tiny_kwargs(name))
    assert isinstance(model, ImageClassifier) and isinstance(model[0], CenterInputs)
    assert model.input_shape == input_shape and model.num_classes == 10
    if name == "liresnet":  # computed from the weights
        assert 0 < model.lipschitz_constant < float("inf")
    else:
        assert model.lipschitz_constant == (None if name == "simpleconvnet" else 1.0)
    logits = model(torch.rand(2, *input_shape))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_lipconvnet_matches_the_paper_on_cifar_shapes():
    model = create_model("lipconvnet-aol", (3, 32, 32), 10)
    linears = [m for m in model.modules() if isinstance(m, AOLLinear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 2048)]
    assert sum(type(m).__name__ == "AOLConv2d" for m in model.modules()) == 16  # the reference code's 1x1 stem
    assert not any(isinstance(m, ZeroPad) for m in model.modules())


def test_lipconvnet_has_the_reference_codes_parameter_count():
    # berndprach/IntriguingProperties' CPL-LCN at width 16: 2,621,408 parameters; without the
    # 1x1 conv after the zero-channel concatenation (architecture version 2) 272 fewer.
    def count(**kwargs):
        return sum(p.numel() for p in create_model("lipconvnet-cpl", (3, 32, 32), 10, width=16, **kwargs).parameters())

    assert (count(), count(stem=False)) == (2_621_408, 2_621_136)


def test_lipconvnet_weights_of_version_2_still_load(tmp_path):
    from robustlab.runs.checkpoint import create_from_architecture, load_model, save_model

    old = create_model("lipconvnet-aol", (1, 8, 8), 10, width=8, depth=1, stem=False)
    architecture = {"name": "lipconvnet-aol", "input_shape": [1, 8, 8], "num_classes": 10, "mean": [0.0]}
    architecture |= {"kwargs": {"width": 8, "depth": 1}, "version": 2}
    save_model(tmp_path / "model.pt", old, architecture)
    loaded = load_model(tmp_path / "model.pt")
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(loaded(x), old.eval()(x))
    assert (
        sum(
            type(m).__name__ == "AOLConv2d"
            for m in create_from_architecture(architecture | {"version": 3}, 10).modules()
        )
        == 4
    )


def test_lipconvnet_adapts_to_mnist_and_digits():
    mnist = create_model("lipconvnet-aol", (1, 28, 28), 10, width=8)
    assert any(isinstance(m, ZeroPad) and (m.height, m.width) == (32, 32) for m in mnist.modules())
    digits = create_model("lipconvnet-aol", (1, 8, 8), 10, width=16)  # 3 blocks: 8x8 -> 1x1, 128 features
    assert [m.in_features for m in digits.modules() if isinstance(m, AOLLinear)] == [128]
    assert digits(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_simpleconvnet_skips_pools_below_one_pixel():
    def pools(shape):
        return sum(isinstance(m, nn.MaxPool2d) for m in create_model("simpleconvnet", shape, 10, width=2).modules())

    assert pools((3, 32, 32)) == 3
    assert pools((1, 2, 2)) == 1


def test_mean_is_stored_and_subtracted():
    model = create_model("lipmlp-aol", (3, 2, 2), 2, mean=[0.1, 0.2, 0.3], depth=1)
    torch.testing.assert_close(model[0].mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
    assert "0.mean" in model.state_dict()


def test_create_model_explains_bad_input():
    with pytest.raises(UnknownNameError, match="lipconvnet-aol"):
        create_model("lipconvnet", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="accepts: width=64, blocks=None, depth=3, kernel_size=3"):
        create_model("lipconvnet-cpl", (3, 32, 32), 10, widht=16)
    with pytest.raises(ValueError, match="width must be int"):
        create_model("lipconvnet-cpl", (3, 32, 32), 10, width="wide")
    with pytest.raises(ValueError, match="even"):
        create_model("lipconvnet-cpl", (3, 32, 32), 10, width=7)
    with pytest.raises(ValueError, match=r"\(channels, height, width\)"):
        create_model("simpleconvnet", (32, 32), 10)
    with pytest.raises(ValueError, match="mean has 1 values"):
        create_model("simpleconvnet", (3, 8, 8), 10, mean=[0.5])
    with pytest.raises(ValueError, match="fewer than the 100 classes"):
        create_model("lipmlp-aol", (1, 4, 4), 100)


def test_model_kwargs_lists_defaults():
    assert model_kwargs("convnet-m-cpl") == {"width": None, "blocks": None, "depth": 5, "kernel_size": 3}
    assert model_kwargs("lipmlp-aol") == {"depth": 7, "width": None, "bias": False}


def test_models_round_trip_through_state_dicts():
    model = create_model("convnet-xs-cpl", (1, 8, 8), 10, width=4, depth=1)
    model(torch.rand(4, 1, 8, 8))  # moves the power-iteration vectors
    copy = create_model("convnet-xs-cpl", (1, 8, 8), 10, width=4, depth=1)
    copy.load_state_dict(model.state_dict())
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(copy.eval()(x), model.eval()(x))


def test_a_run_of_version_2_exports_a_file_that_loads_the_same_model(tmp_path):
    """export_run records the version the run's weights were saved by, not this robustlab's."""
    from robustlab.config import load_config
    from robustlab.runs.checkpoint import architecture_record, export_run, load_model, save_model

    config = load_config(None, ["model.name=lipconvnet-aol", "model.kwargs={width: 8, depth: 1}"])
    old = create_model("lipconvnet-aol", (1, 8, 8), 10, width=8, depth=1, stem=False)
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    save_model(tmp_path / "model.pt", old, architecture_record(old, config) | {"version": 2})
    loaded = load_model(export_run(tmp_path))
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), old.eval()(x))
