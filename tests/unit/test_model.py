"""Optimizer groups, the LR schedule and the padding-invariant loss."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering

import errors
import settings
import training

HP = {"weight_decay": 0.01, "learning_rate": 1e-3, "adam_epsilon": 1e-6}


def test_schedule_warmup_then_linear_decay():
    f = training.linear_warmup_decay(10, 110)
    assert [f(0), f(5), f(10), f(60), f(110), f(200)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("radam", torch.optim.RAdam)])
def test_no_weight_decay_on_biases_and_layer_norm(tiny_model, name, cls):
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_model)
    opt = training.build_optimizer(model, {**HP, "optimizer": name})
    assert isinstance(opt, cls)
    decay, no_decay = ({id(p) for p in g["params"]} for g in opt.param_groups)
    assert (
        opt.param_groups[1]["weight_decay"] == 0.0 and opt.param_groups[0]["weight_decay"] == 0.01
    )
    for pname, p in model.named_parameters():
        expect_no_decay = pname.endswith("bias") or "LayerNorm" in pname or "layer_norm" in pname
        assert (id(p) in no_decay) == expect_no_decay, pname
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    if name == "radam":
        assert opt.param_groups[0]["decoupled_weight_decay"]
    with pytest.raises(errors.ConfigError, match='hyperparameters.optimizer: "sgd" is not known'):
        settings.hyperparameters({"optimizer": "sgd"})  # checked before any model exists


def test_loss_does_not_depend_on_padding_width(tiny_model):
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_model).eval()
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(5, 200, (2, 40)))
    lengths = torch.tensor([40, 25])

    def loss(width):
        x = torch.zeros(2, width, dtype=torch.long)
        x[:, :40] = ids
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        x = x * mask
        out = model(input_ids=x, attention_mask=mask)
        return training.qa_loss(
            out.start_logits, out.end_logits, torch.tensor([3, 7]), torch.tensor([5, 9]), mask
        )

    with torch.no_grad():
        assert loss(40).item() == pytest.approx(loss(128).item(), abs=1e-5)
