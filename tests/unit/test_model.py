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


def _loss_grads_and_layer_calls(model, ids):
    """Loss, gradients, and how many times the first AlbertLayer ran in the forward and in the
    backward pass (counted by wrapping its forward: recomputation calls it again)."""
    layer = next(m for m in model.modules() if type(m).__name__ == "AlbertLayer")
    calls, forward = [0], layer.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    layer.forward = counted
    torch.manual_seed(1)  # the same dropout masks in both models
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    in_forward = calls[0]
    loss = out.start_logits.square().mean() + out.end_logits.square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, in_forward, calls[0] - in_forward


def test_albert_gradient_checkpointing_recomputes_and_matches(tiny_model):
    # transformers' ALBERT class refuses gradient_checkpointing_enable(); models.py checkpoints
    # each call of ALBERT's shared layer group instead.
    import models

    hp = {"pretrained_model_name": tiny_model}
    plain, checkpointed = models.load_model(hp), models.load_model(hp)
    models.enable_gradient_checkpointing(checkpointed)
    for model in (plain, checkpointed):
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.1  # the tiny model has none: make recomputation reproduce real dropout
    ids = torch.randint(5, 100, (2, 24), generator=torch.Generator().manual_seed(0))
    loss, grads, forward_calls, backward_calls = _loss_grads_and_layer_calls(plain, ids)
    loss_c, grads_c, forward_calls_c, backward_calls_c = _loss_grads_and_layer_calls(
        checkpointed, ids
    )
    layers = plain.config.num_hidden_layers
    assert (forward_calls, backward_calls) == (layers, 0)
    assert (forward_calls_c, backward_calls_c) == (layers, layers)  # every layer call recomputed
    assert loss_c == pytest.approx(loss, abs=1e-6)
    assert grads.keys() == grads_c.keys()
    for name in grads:
        torch.testing.assert_close(grads_c[name], grads[name], rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # evaluation computes once, nothing kept to recompute
        checkpointed.eval()
        assert _layer_calls_in_eval(checkpointed, ids) == layers


def _layer_calls_in_eval(model, ids):
    layer = next(m for m in model.modules() if type(m).__name__ == "AlbertLayer")
    calls, forward = [0], layer.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    layer.forward = counted
    model(input_ids=ids)
    return calls[0]


@pytest.mark.parametrize(
    "model_type, mode", [("albert", "albert"), ("bert", "transformers"), ("mpnet", None)]
)
def test_gradient_checkpointing_mode_from_the_config(tmp_path, model_type, mode):
    from transformers import AutoConfig

    import models

    assert models.gradient_checkpointing_mode(AutoConfig.for_model(model_type)) == mode
    if mode is None:  # refused from config.json alone: no tokenizer or weights in the directory
        AutoConfig.for_model(model_type).save_pretrained(tmp_path)
        hp = {"pretrained_model_name": str(tmp_path), "gradient_checkpointing": True}
        with pytest.raises(errors.ConfigError, match="'mpnet' model.*set it to false"):
            models.check_gradient_checkpointing(hp)
