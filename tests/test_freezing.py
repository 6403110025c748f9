import pytest
import torch
from torch import nn

import cvapps
from cvapps.errors import ConfigError
from cvapps.training.freezing import (count_parameters, freeze, frozen_state, param_groups, restore_frozen_state,
                                      unfreeze, unfreeze_schedule)


def _model():
    torch.manual_seed(0)
    return cvapps.create_model("classify", "mobilenet_v3_small", labels=["a", "b"], img_size=64)


def _bns(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_freeze_backbone_keeps_bn_stats_across_train_calls():
    m = _model()
    freeze(m, "backbone")
    m.train()
    assert all(not p.requires_grad for p in m.backbone.parameters())
    assert all(p.requires_grad for p in m.head.parameters())
    assert all(not bn.training for bn in _bns(m.backbone))
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    opt = torch.optim.AdamW(param_groups(m, 1e-2), lr=1e-2)
    loss = m.loss(m(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 0, 1]))["loss"]
    loss.backward()
    opt.step()
    after = m.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights AND running stats
    t, f = count_parameters(m)
    assert t == sum(p.numel() for p in m.head.parameters()) and f > 0


def test_freeze_stages_and_regex_and_unfreeze():
    m = _model()
    freeze(m, "stage:2")
    stages = m.backbone.stages()
    assert all(not p.requires_grad for s in stages[:2] for p in s.parameters())
    assert all(p.requires_grad for s in stages[2:] for p in s.parameters())
    unfreeze(m, "stage:2")
    assert all(p.requires_grad for p in m.parameters())
    freeze(m, r"backbone\.body\.(0|1)\b")
    assert not m.backbone.body[0][0].weight.requires_grad and m.backbone.body[2].block[0][0].weight.requires_grad
    with pytest.raises(ConfigError, match="matches no module"):
        freeze(m, "nothing_like_this")
    with pytest.raises(ConfigError, match="has 5 stages"):
        freeze(m, "stage:9")


def test_param_groups_backbone_lr_ratio():
    m = _model()
    groups = param_groups(m, 1e-3, backbone_lr_ratio=0.1)
    bb_ids = {id(p) for p in m.backbone.parameters()}
    for g in groups:
        is_bb = id(g["params"][0]) in bb_ids
        assert all((id(p) in bb_ids) == is_bb for p in g["params"])
        assert g["lr"] == pytest.approx(1e-4 if is_bb else 1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_gradual_unfreeze_deepest_stage_first():
    m = _model()
    freeze(m, "backbone")
    assert not unfreeze_schedule(m, 1, unfreeze_at=2)
    assert unfreeze_schedule(m, 2, unfreeze_at=2)
    stages = m.backbone.stages()
    assert all(p.requires_grad for p in stages[-1].parameters())
    assert all(not p.requires_grad for p in stages[-2].parameters())
    m.train()
    assert all(bn.training for bn in _bns(stages[-1])) and not any(bn.training for bn in _bns(stages[0]))
    unfreeze_schedule(m, 3, unfreeze_at=2)
    assert all(p.requires_grad for p in stages[-2].parameters())


def test_frozen_state_survives_resume():
    m = _model()
    freeze(m, "backbone")
    names = frozen_state(m)
    fresh = _model()
    restore_frozen_state(fresh, names)
    fresh.train()
    assert frozen_state(fresh) == names
    assert not any(bn.training for bn in _bns(fresh.backbone))
