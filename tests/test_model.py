"""nn_doctor.model: building models from the spec, shape errors, init, loss, optimizer, devices."""
from __future__ import annotations

import math
import textwrap

import pytest
import torch
from torch import nn

from nn_doctor.errors import ModelBuildError, UsageError
from nn_doctor.model import (apply_init, build_loss, build_model, build_optimizer, count_parameters,
                             layer_table, model_summary, resolve_device)
from nn_doctor.spec import InitSpec, LossSpec, ModelSpec, OptimizerSpec


def spec(*layers, **kw) -> ModelSpec:
    return ModelSpec.model_validate({"layers": list(layers), **kw})


def out_shape(model: nn.Module, input_shape, n: int = 5) -> tuple:
    model.eval()
    with torch.no_grad():
        return tuple(model(torch.randn(n, *input_shape)).shape)


# ---- building --------------------------------------------------------------------------------

def test_mlp_builds_with_inferred_input_size():
    m = build_model(spec({"type": "linear", "out": 64}, {"type": "relu"}, {"type": "dropout", "p": 0.1},
                         {"type": "linear", "out": 3}), (13,))
    assert isinstance(m, nn.Sequential)
    assert m[0].in_features == 13 and m[0].out_features == 64
    assert m[3].in_features == 64
    assert m.training  # returned in train mode
    assert out_shape(m, (13,)) == (5, 3)
    assert count_parameters(m) == 13 * 64 + 64 + 64 * 3 + 3
    names = [n for n, _, _ in layer_table(m)]
    kinds = [k for _, _, k in layer_table(m)]
    assert names == ["0:linear", "1:relu", "2:dropout", "3:linear"]
    assert kinds == ["linear", "activation", "dropout", "linear"]


def test_conv_net_builds():
    m = build_model(spec({"type": "conv2d", "out": 8, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                         {"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"},
                         {"type": "linear", "out": 10}), (1, 8, 8))
    assert m[0].in_channels == 1 and m[0].out_channels == 8
    assert m[4].in_features == 8 * 4 * 4
    assert out_shape(m, (1, 8, 8)) == (5, 10)
    assert [k for _, _, k in layer_table(m)] == ["conv", "activation", "pool", "other", "linear"]


def test_conv1d_batchnorm_and_adaptive_pool():
    m = build_model(spec({"type": "conv1d", "out": 4, "kernel_size": 3}, {"type": "batchnorm1d"},
                         {"type": "adaptive_avgpool1d"}, {"type": "flatten"}, {"type": "linear", "out": 2}),
                    (2, 16))
    assert m[1].num_features == 4
    assert m[4].in_features == 4  # output_size defaults to 1
    assert out_shape(m, (2, 16)) == (5, 2)


def test_lstm_returns_last_step():
    m = build_model(spec({"type": "lstm", "out": 16}, {"type": "linear", "out": 10}), (8, 8))
    assert out_shape(m, (8, 8)) == (5, 10)
    x = torch.randn(3, 8, 8)
    full, _ = m[0].rnn(x)
    assert torch.allclose(m[0](x), full[:, -1, :])
    assert m[0].rnn.input_size == 8 and m[0].rnn.hidden_size == 16 and m[0].rnn.batch_first
    assert layer_table(m)[0][0] == "0:lstm" and layer_table(m)[0][2] == "recurrent"


def test_gru_passes_extra_kwargs():
    m = build_model(spec({"type": "gru", "out": 6, "num_layers": 2}, {"type": "linear", "out": 1}), (5, 3))
    assert m[0].rnn.num_layers == 2
    assert out_shape(m, (5, 3)) == (5, 1)


def test_residual_block_adds_input():
    m = build_model(spec({"type": "residual", "layers": [{"type": "linear", "out": 13}, {"type": "relu"}]},
                         {"type": "linear", "out": 2}), (13,))
    x = torch.randn(4, 13)
    block = m[0]
    assert torch.allclose(block(x), x + torch.relu(block[0](x)))
    assert [n for n, _, _ in layer_table(m)] == ["0.0:linear", "0.1:relu", "1:linear"]


def test_residual_that_changes_shape_is_rejected():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "linear", "out": 13},
                         {"type": "residual", "layers": [{"type": "linear", "out": 8}, {"type": "relu"}]}), (13,))
    e = ei.value
    assert "layers[1]" in str(e) and "residual" in str(e)
    assert "(N, 13)" in str(e) and "(N, 8)" in str(e)
    assert e.evidence["layer"] == 1


def test_error_inside_residual_names_inner_path():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "residual", "layers": [{"type": "conv2d", "out": 4, "kernel_size": 3}]}), (13,))
    assert "layers[0].layers[0] (conv2d)" in str(ei.value)


def test_unknown_layer_suggests_close_match():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "lineer", "out": 3}), (13,))
    assert "lineer" in str(ei.value) and "linear" in str(ei.value)
    assert ei.value.evidence["type"] == "lineer"


def test_linear_on_image_needs_flatten():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "linear", "out": 10}), (1, 8, 8))
    msg = str(ei.value)
    assert msg.startswith("model.layers[0] (linear):")
    assert "(N, 1, 8, 8)" in msg and "flatten" in msg
    assert ei.value.layer == "layers[0] (linear)"
    assert ei.value.evidence == {"layer": 0, "path": "layers[0]", "type": "linear", "input_shape": [1, 8, 8]}


def test_linear_per_timestep_allowed_before_lstm():
    m = build_model(spec({"type": "linear", "out": 4}, {"type": "lstm", "out": 3}, {"type": "linear", "out": 1}),
                    (6, 5))
    assert out_shape(m, (6, 5)) == (5, 1)


def test_conv2d_on_tabular_is_rejected():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "conv2d", "out": 4, "kernel_size": 3}), (13,))
    assert "4-D" in str(ei.value) and "(N, 13)" in str(ei.value)


def test_lstm_on_tabular_is_rejected():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "lstm", "out": 4}), (13,))
    assert "3-D" in str(ei.value) and "layers[0] (lstm)" in str(ei.value)


def test_conv_requires_kernel_size():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "conv2d", "out": 4}), (1, 8, 8))
    assert "kernel_size" in str(ei.value)


def test_bad_kwarg_is_named():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "linear", "out": 3, "biass": False}), (13,))
    msg = str(ei.value)
    assert "'biass'" in msg and "bias" in msg and "layers[0] (linear)" in msg
    assert ei.value.evidence["bad_key"] == "biass"


def test_bad_kwarg_value_reports_torch_message():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "linear", "out": 3}, {"type": "dropout", "p": 2.0}), (13,))
    assert "layers[1] (dropout)" in str(ei.value) and "p=2.0" in str(ei.value)


def test_forward_failure_names_shapes():
    # 8x8 image, two 2x2 pools then a 3x3 valid conv on 2x2: torch fails; the message carries the shapes
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "maxpool2d", "kernel_size": 2}, {"type": "maxpool2d", "kernel_size": 2},
                         {"type": "conv2d", "out": 2, "kernel_size": 3}), (1, 8, 8))
    assert "layers[2] (conv2d)" in str(ei.value) and "(N, 1, 2, 2)" in str(ei.value)


def test_explicit_input_size_must_match():
    with pytest.raises(ModelBuildError) as ei:
        build_model(spec({"type": "linear", "out": 3, "in_features": 10}), (13,))
    assert "in_features" in str(ei.value) and "13" in str(ei.value)


def test_out_on_activation_is_rejected():
    with pytest.raises(ModelBuildError, match="'out' is not used by relu"):
        build_model(spec({"type": "linear", "out": 3}, {"type": "relu", "out": 3}), (13,))


def test_activation_table_and_softmax_dim():
    acts = ["relu", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "softplus", "softsign",
            "hardsigmoid", "hardswish", "hardtanh", "relu6", "prelu", "rrelu", "tanh", "sigmoid",
            "tanhshrink", "logsigmoid", "softmax", "log_softmax", "softmin"]
    layers = [{"type": "linear", "out": 6}]
    for a in acts:
        layers.append({"type": a})
    m = build_model(spec(*layers, {"type": "linear", "out": 2}), (4,))
    assert out_shape(m, (4,)) == (5, 2)
    sm = build_model(spec({"type": "linear", "out": 3}, {"type": "softmax"}), (4,))
    assert sm[1].dim == 1
    with torch.no_grad():
        assert torch.allclose(sm.eval()(torch.randn(7, 4)).sum(1), torch.ones(7))
    glu = build_model(spec({"type": "linear", "out": 6}, {"type": "glu"}), (4,))
    assert out_shape(glu, (4,)) == (5, 3)


def test_model_summary():
    s = model_summary(spec({"type": "linear", "out": 8}, {"type": "sigmoid"}, {"type": "linear", "out": 8},
                           {"type": "tanh"}, {"type": "residual", "layers": [{"type": "linear", "out": 8}]},
                           {"type": "linear", "out": 3}, {"type": "softmax"}))
    assert s["activations"] == ["sigmoid", "tanh", "softmax"]
    assert s["last_activation"] == "softmax"
    assert s["n_saturating"] == 2
    assert s["has_residual"] and not s["has_norm"]
    assert s["n_layers"] == 7
    s2 = model_summary(spec({"type": "linear", "out": 3}, {"type": "sigmoid"}, {"type": "dropout", "p": 0.1}))
    assert s2["last_activation"] == "sigmoid" and s2["n_saturating"] == 0
    s3 = model_summary(spec({"type": "linear", "out": 3}, {"type": "batchnorm1d"}))
    assert s3["last_activation"] is None and s3["has_norm"]
    assert model_summary(ModelSpec.model_validate({"class": "a.b:C"})) is None


# ---- init ------------------------------------------------------------------------------------

def _wide(init: str | dict, act: str = "relu") -> nn.Module:
    m = build_model(spec({"type": "linear", "out": 256}, {"type": act}, {"type": "linear", "out": 256}), (256,))
    return apply_init(m, InitSpec.model_validate(init), generator_seed=0)


def test_init_zeros_and_constant():
    m = _wide("zeros")
    assert all(torch.count_nonzero(p) == 0 for p in m.parameters())
    m = _wide({"constant": 0.1})
    assert torch.allclose(m[0].weight, torch.full_like(m[0].weight, 0.1))
    assert torch.count_nonzero(m[0].bias) == 0


def test_init_he_std():
    w = _wide("he")[0].weight
    expected = math.sqrt(2.0 / 256)
    assert abs(w.std().item() - expected) / expected < 0.15
    assert torch.count_nonzero(_wide("he")[0].bias) == 0


def test_init_he_uses_leaky_relu_slope():
    w = _wide("he", act="leaky_relu")[0].weight  # default slope 0.01: gain sqrt(2 / (1 + 0.01**2))
    expected = math.sqrt(2.0 / (1 + 0.01 ** 2)) / math.sqrt(256)
    assert abs(w.std().item() - expected) / expected < 0.15


def test_init_xavier_lecun_normal_uniform():
    w = _wide("xavier")[0].weight
    bound = math.sqrt(6.0 / (256 + 256))
    assert w.abs().max().item() <= bound + 1e-6
    assert abs(w.std().item() - bound / math.sqrt(3)) / (bound / math.sqrt(3)) < 0.15
    w = _wide("lecun")[0].weight
    assert abs(w.std().item() - 1 / 16) / (1 / 16) < 0.15
    w = _wide({"normal": 0.5})[0].weight
    assert abs(w.std().item() - 0.5) / 0.5 < 0.15
    w = _wide({"uniform": 0.05})[0].weight
    assert w.abs().max().item() <= 0.05 and w.abs().max().item() > 0.04


def test_init_orthogonal():
    w = _wide("orthogonal")[0].weight
    assert torch.allclose(w @ w.T, torch.eye(256), atol=1e-4)


def test_init_default_leaves_weights_and_seed_reproduces():
    m = build_model(spec({"type": "linear", "out": 4}), (3,))
    before = m[0].weight.clone()
    apply_init(m, InitSpec.model_validate("default"))
    assert torch.equal(before, m[0].weight)
    a, b = _wide("he")[0].weight, _wide("he")[0].weight
    assert torch.equal(a, b)
    m = build_model(spec({"type": "linear", "out": 4}), (3,))
    state = torch.get_rng_state()
    apply_init(m, InitSpec.model_validate("he"), generator_seed=1)
    assert torch.equal(state, torch.get_rng_state())  # a seeded init leaves the global RNG alone


def test_init_recurrent_and_norm():
    m = build_model(spec({"type": "lstm", "out": 8}, {"type": "layernorm"}, {"type": "linear", "out": 2}), (5, 4))
    with torch.no_grad():
        m[1].weight.fill_(3.0)
    apply_init(m, InitSpec.model_validate({"constant": 0.2}))
    rnn = m[0].rnn
    assert torch.allclose(rnn.weight_ih_l0, torch.full_like(rnn.weight_ih_l0, 0.2))
    assert torch.allclose(rnn.weight_hh_l0, torch.full_like(rnn.weight_hh_l0, 0.2))
    assert torch.count_nonzero(rnn.bias_ih_l0) == 0
    assert torch.all(m[1].weight == 1) and torch.all(m[1].bias == 0)


# ---- loss ------------------------------------------------------------------------------------

def test_balanced_class_weights():
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    loss = build_loss(LossSpec.model_validate({"name": "cross_entropy", "class_weights": "balanced"}),
                      "classification", y, 3)
    assert isinstance(loss, nn.CrossEntropyLoss)
    expected = torch.tensor([10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])
    assert torch.allclose(loss.weight, expected)


def test_class_weights_list_and_length_check():
    y = torch.tensor([0, 1, 2, 1])
    loss = build_loss(LossSpec.model_validate({"name": "cross_entropy", "class_weights": [1, 2, 3],
                                               "label_smoothing": 0.1}), "classification", y, 3)
    assert torch.allclose(loss.weight, torch.tensor([1.0, 2.0, 3.0])) and loss.label_smoothing == 0.1
    with pytest.raises(UsageError, match="2 values but the data have 3 classes"):
        build_loss(LossSpec.model_validate({"name": "cross_entropy", "class_weights": [1, 2]}),
                   "classification", y, 3)


def test_bce_with_logits_pos_weight():
    y = torch.tensor([0.0] * 8 + [1.0] * 2).unsqueeze(1)
    loss = build_loss(LossSpec.model_validate({"name": "bce_with_logits", "class_weights": "balanced"}),
                      "binary", y, 2)
    assert torch.allclose(loss.pos_weight, torch.tensor([4.0]))
    ym = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    loss = build_loss(LossSpec.model_validate({"name": "bce_with_logits", "class_weights": "balanced"}),
                      "multilabel", ym, 2)
    assert torch.allclose(loss.pos_weight, torch.tensor([1.0, 3.0]))


def test_plain_losses():
    y = torch.randn(10)
    for name, cls in [("mse", nn.MSELoss), ("l1", nn.L1Loss), ("huber", nn.HuberLoss), ("bce", nn.BCELoss),
                      ("nll", nn.NLLLoss), ("bce_with_logits", nn.BCEWithLogitsLoss)]:
        assert isinstance(build_loss(LossSpec.model_validate(name), "regression", y, None), cls)
    with pytest.raises(UsageError):
        build_loss(LossSpec.model_validate({"name": "mse", "class_weights": "balanced"}), "regression", y, None)


# ---- optimizer -------------------------------------------------------------------------------

def test_build_optimizer_types_and_lr_override():
    m = nn.Linear(3, 2)
    for name, cls in [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                      ("rmsprop", torch.optim.RMSprop)]:
        opt = build_optimizer(OptimizerSpec(name=name, lr=0.01, weight_decay=1e-4), m.parameters())
        assert type(opt) is cls
        assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["weight_decay"] == 1e-4
    opt = build_optimizer(OptimizerSpec(name="sgd", lr=0.01, momentum=0.9), m.parameters(), lr=0.5)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["momentum"] == 0.9
    assert build_optimizer(OptimizerSpec(name="adamw"), m.parameters()).param_groups[0]["weight_decay"] == 0.0


# ---- user classes ----------------------------------------------------------------------------

def test_user_class_from_base_dir(tmp_path):
    (tmp_path / "nnd_usernet_pkg").mkdir()
    (tmp_path / "nnd_usernet_pkg" / "__init__.py").write_text("")
    (tmp_path / "nnd_usernet_pkg" / "nets.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self, hidden=4):
                super().__init__()
                self.act = nn.ReLU()          # registered first, runs second
                self.fc1 = nn.Linear(13, hidden)
                self.fc2 = nn.Linear(hidden, 3)
            def forward(self, x):
                return self.fc2(self.act(self.fc1(x)))
    """))
    ms = ModelSpec.model_validate({"class": "nnd_usernet_pkg.nets:Net", "kwargs": {"hidden": 7}})
    m = build_model(ms, (13,), base_dir=str(tmp_path))
    assert m.fc1.out_features == 7
    assert out_shape(m, (13,)) == (5, 3)
    assert str(tmp_path) not in __import__("sys").path
    assert [n for n, _, _ in layer_table(m)] == ["fc1:linear", "act:relu", "fc2:linear"]

    with pytest.raises(ModelBuildError) as ei:   # wrong input size for this data
        build_model(ms, (10,), base_dir=str(tmp_path))
    assert "(N, 10)" in str(ei.value)
    with pytest.raises(UsageError, match="has no attribute Nett"):
        build_model(ModelSpec.model_validate({"class": "nnd_usernet_pkg.nets:Nett"}), (13,), base_dir=str(tmp_path))
    with pytest.raises(UsageError, match=r"Net\(width=3\) failed"):
        build_model(ModelSpec.model_validate({"class": "nnd_usernet_pkg.nets:Net", "kwargs": {"width": 3}}),
                    (13,), base_dir=str(tmp_path))


def test_user_class_missing_module(tmp_path):
    with pytest.raises(UsageError) as ei:
        build_model(ModelSpec.model_validate({"class": "nnd_no_such_pkg.mod:Net"}), (13,), base_dir=str(tmp_path))
    msg = str(ei.value)
    assert msg.startswith("model.class 'nnd_no_such_pkg.mod:Net': cannot import nnd_no_such_pkg.mod")
    assert "No module named" in msg and "\n" not in msg


# ---- devices ---------------------------------------------------------------------------------

def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_resolve_cuda_unavailable(monkeypatch):
    # runs on every machine: CUDA is hidden the way torch reports a CPU-only build
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError) as ei:
        resolve_device("cuda")
    assert "cpu" in str(ei.value) and "'cuda'" in str(ei.value)
    with pytest.raises(UsageError):
        resolve_device("cuda:1")


def test_resolve_cuda_index_that_does_not_exist():
    with pytest.raises(UsageError) as ei:
        resolve_device("cuda:99")
    assert "cuda:99" in str(ei.value)
