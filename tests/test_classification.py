import math

import numpy as np
import pytest
import torch

import cvapps
from cvapps.tasks.classification.loss import expected_value, value_to_bin
from cvapps.tasks.classification.metrics import average_precision, classification_metrics, confusion_matrix


def test_confusion_and_accuracy_hand_computed():
    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [0, 3, 2], [1, 0, 2]])  # argmax 0,1,1,2
    targets = torch.tensor([0, 1, 2, 2])
    m = classification_metrics(logits, targets, {"kind": "multiclass"}, ["a", "b", "c"])
    assert m["top1"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert m["per_class"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert m["top5"] == 1.0 and m["count"] == 4
    np.testing.assert_array_equal(confusion_matrix(np.array([1, 1]), np.array([0, 1]), 2), [[0, 1], [0, 1]])


def test_average_precision_hand_computed():
    # ranking: pos, neg, pos -> precisions at positives 1/1 and 2/3 -> AP = 5/6
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx(5 / 6)
    m = classification_metrics(torch.tensor([[2.0, -1], [1.0, 1], [0.5, -2]]), torch.tensor([[1, 0], [0, 1], [1, 0]]),
                               {"kind": "multilabel"}, ["x", "y"])
    assert m["per_class_AP"]["x"] == pytest.approx(5 / 6) and m["per_class_AP"]["y"] == 1.0


def test_regression_and_binned_metrics():
    m = classification_metrics(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 2.0]), {"kind": "regression"}, [])
    assert m["MAE"] == pytest.approx(1.0)
    bins = [0, 10, 5]  # centres 1,3,5,7,9
    logits = torch.tensor([[0.0, 0, 0, 0, 0]])
    assert float(expected_value(logits, bins)) == pytest.approx(5.0)
    assert value_to_bin(torch.tensor([0.0, 2.1, 9.99, 12.0]), bins).tolist() == [0, 1, 4, 4]


@pytest.mark.parametrize("kind,targets,extra", [
    ("multiclass", torch.tensor([0, 1, 2, 0]), {"label_smoothing": 0.1}),
    ("multilabel", torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]), {}),
    ("regression", torch.tensor([0.5, -1.0, 2.0, 0.0]), {"loss": "l1"}),
    ("binned", torch.tensor([0.5, 4.0, 9.0, 2.0]), {"bins": [0, 10, 5]}),
])
def test_a_training_step_lowers_the_loss(kind, targets, extra):
    torch.manual_seed(0)
    m = cvapps.create_model("classify", "mobilenet_v3_small", labels=["a", "b", "c"], kind=kind, img_size=32,
                            dropout=0.0, **extra)
    m.train()
    x = torch.randn(4, 3, 32, 32)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = m.loss(m(x), targets)["loss"]
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.9 * losses[0], (kind, losses)


def test_uncertainty_is_entropy():
    m = cvapps.create_model("classify", "mobilenet_v3_small", labels=["a", "b"], img_size=32)
    raw = type("R", (), {"logits": torch.tensor([[0.0, 0.0], [100.0, 0.0]])})()
    u = m.uncertainty(raw)
    assert u[0] == pytest.approx(math.log(2)) and u[1] == pytest.approx(0.0, abs=1e-6)


def test_predictions_are_typed_and_json_safe(tiny_model):
    import json

    from conftest import colour_image

    p = tiny_model.predict(colour_image((1, 2, 3)), top_k=2)[0]
    assert p.scores.shape == (3,) and abs(p.scores.sum() - 1) < 1e-5
    d = p.to_dict()
    assert len(d) == 2 and set(d[0]) == {"index", "label", "score"} and d[0]["label"] in tiny_model.labels
    json.dumps(d)
    drawn = p.draw(colour_image((1, 2, 3)))
    assert drawn.shape == (48, 64, 3)
