"""The assignment's architectures: parameter counts, shapes, 'same' padding and init."""

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.nets import count_parameters, keras_init_, mlp, net_1, net_2, same_padding
from cnnlab.training.entry import as_user_error

SEED_COUNTS = {
    ("net_1", (1, 28, 28)): 1_625_866,
    ("net_1", (3, 32, 32)): 2_117_962,
    ("net_2", (1, 28, 28)): 1_625_866,
    ("net_2", (3, 32, 32)): 2_117_962,
}
NETS = {"net_1": net_1, "net_2": net_2}


@pytest.mark.parametrize(("name", "shape"), list(SEED_COUNTS))
def test_parameter_counts_match_the_assignment(name: str, shape: tuple[int, int, int]) -> None:
    net = NETS[name](shape, 10)
    assert count_parameters(net) == SEED_COUNTS[(name, shape)]
    logits = net(torch.rand(4, *shape))
    assert logits.shape == (4, 10)


def test_net_1_layers_and_feature_map_shapes() -> None:
    net = net_1((1, 28, 28), 10)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (3, 3), (1, 1)),
        (64, (3, 3), (1, 1)),
    ]
    assert sum(isinstance(m, nn.MaxPool2d) for m in net) == 1
    features = net[:5](torch.zeros(1, 1, 28, 28))
    assert features.shape == (1, 64, 14, 14)


def test_net_2_downsamples_with_a_strided_conv_instead_of_pooling() -> None:
    net = net_2((3, 32, 32), 10)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert convs[1].stride == (2, 2)
    assert net[:5](torch.zeros(1, 3, 32, 32)).shape == (1, 64, 16, 16)


def test_same_padding_follows_tensorflow() -> None:
    assert same_padding(28, 3, 1) == (1, 1)
    assert same_padding(28, 3, 2) == (0, 1)  # TF puts the odd pixel after
    assert same_padding(27, 3, 2) == (1, 1)


def test_strided_same_conv_matches_tensorflow_alignment() -> None:
    """A 'same' stride-2 conv starts its windows at pixel 0, as TensorFlow does."""
    net = net_2((1, 4, 4), 10)
    pad, conv = net[2], net[3]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the window's top-left pixel
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = conv(pad(image.expand(1, 32, 4, 4) * (torch.arange(32) == 0).view(1, 32, 1, 1)))
    assert out[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]


def test_dense_head_is_configurable_for_the_assignments_models_a_to_f() -> None:
    net = net_1((1, 28, 28), 10, hidden_sizes=[40, 40], activation="tanh")
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [lin.out_features for lin in linears] == [40, 40, 10]
    assert sum(isinstance(m, nn.Tanh) for m in net) == 2


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"activation": "relux"}, "model.net.activation='relux' is invalid: use one of relu, tanh"),
        ({"init": "glorot"}, "model.net.init='glorot' is invalid: use one of torch, keras"),
        ({"hidden_sizes": [0]}, "model.net.hidden_sizes=[0] is invalid: give a list of positive"),
        ({"hidden_sizes": 40}, "model.net.hidden_sizes=40 is invalid: give a list of positive"),
    ],
)
@pytest.mark.parametrize("net", [net_1, net_2, mlp])
def test_each_net_refuses_a_setting_it_does_not_know_naming_the_key(
    net: Callable[..., nn.Module], setting: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        net((1, 28, 28), 10, **setting)


def test_a_bad_net_setting_is_one_line_naming_the_key_when_the_model_is_built(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    """As train() builds the model: the net's own check reaches the user as it is."""
    cfg = compose_cfg(["model=net_1", "model.net.activation=relux"])
    with pytest.raises(Exception) as info:
        instantiate(cfg.model, _recursive_=False, sample_shape=[1, 28, 28], num_classes=10)
    err = as_user_error(info.value)
    assert isinstance(err, ConfigError) and "\n" not in str(err)
    assert str(err) == (
        "model.net.activation='relux' is invalid: use one of relu, tanh, sigmoid, elu, gelu"
    )


def test_keras_init_is_glorot_uniform_with_zero_biases() -> None:
    torch.manual_seed(0)
    net = net_1((1, 28, 28), 10, init="keras")
    dense = next(m for m in net if isinstance(m, nn.Linear))
    limit = (6 / (dense.in_features + dense.out_features)) ** 0.5
    assert float(dense.weight.detach().abs().max()) <= limit
    assert float(dense.weight.detach().abs().max()) > 0.9 * limit  # uniform fills the whole range
    assert all(
        float(m.bias.detach().abs().max()) == 0
        for m in net
        if isinstance(m, (nn.Conv2d, nn.Linear))
    )
    torch_default = net_1((1, 28, 28), 10, init="torch")
    assert float(torch_default[0].bias.detach().abs().max()) > 0
    assert keras_init_(torch_default) is torch_default
