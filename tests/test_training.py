import json

import pytest
import torch
from safetensors.torch import load_file

import cvapps
from cvapps.training import trainer as trainer_mod

FAST = dict(epochs=3, batch_size=6, lr=3e-3, warmup_epochs=0.5, img_size=32, seed=1, backbone="mobilenet_v3_small")


def test_train_writes_run_folder_and_learns(tmp_path, colour_folder):
    out = tmp_path / "run"
    r = cvapps.train("classify", str(colour_folder), out=str(out), **FAST)
    for name in ("best.safetensors", "last.safetensors", "checkpoint.pt", "metrics.jsonl", "curves.png",
                 "confusion.png"):
        assert (out / name).is_file(), name
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert recs[-1]["train_loss"] < recs[0]["train_loss"]
    assert r["val"]["count"] == 9 and set(r["val"]["per_class"]) == {"blue", "green", "red"}
    best = cvapps.load(out / "best.safetensors")
    assert best.labels == ["blue", "green", "red"]


def test_killed_run_resumes_exactly(tmp_path, colour_folder, monkeypatch):
    full = tmp_path / "full"
    cvapps.train("classify", str(colour_folder), out=str(full), **FAST)

    part = tmp_path / "part"
    real = trainer_mod.unfreeze_schedule

    def kill_at_epoch_2(model, epoch, *a, **k):
        if epoch == 2:
            raise KeyboardInterrupt  # as if killed during the third epoch
        return real(model, epoch, *a, **k)

    monkeypatch.setattr(trainer_mod, "unfreeze_schedule", kill_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        cvapps.train("classify", str(colour_folder), out=str(part), **FAST)
    monkeypatch.setattr(trainer_mod, "unfreeze_schedule", real)
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 2
    cvapps.train("classify", str(colour_folder), out=str(part), resume=True, **FAST)
    a, b = load_file(full / "last.safetensors"), load_file(part / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (full / "metrics.jsonl").read_text().count("\n") == (part / "metrics.jsonl").read_text().count("\n")


def test_frozen_backbone_trains_head_on_cached_features(tmp_path, colour_folder, capsys):
    out = tmp_path / "frozen"
    cvapps.train("classify", str(colour_folder), out=str(out), freeze="backbone", **{**FAST, "epochs": 4})
    err = " ".join(capsys.readouterr().err.split())
    assert "training the head on cached backbone features" in err
    head_params = sum(p.numel() for p in cvapps.load(out / "last.safetensors").head.parameters())
    assert f"{head_params:,} trainable" in err
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["train_loss"] < recs[0]["train_loss"]
    # the backbone (weights and BN statistics) is exactly the seeded initial one; the head moved
    trainer_mod.seed_everything(FAST["seed"])
    init = cvapps.create_model("classify", "mobilenet_v3_small", labels=["blue", "green", "red"], img_size=32)
    trained = load_file(out / "last.safetensors")
    for k, v in init.state_dict().items():
        assert torch.equal(trained[k], v) == k.startswith("backbone."), k


def test_nan_loss_stops_with_clear_error(tmp_path, colour_folder, monkeypatch):
    from cvapps.tasks.classification.model import ClassificationModel

    monkeypatch.setattr(ClassificationModel, "loss",
                        lambda self, raw, t: {"loss": raw.logits.sum() * float("nan")})
    with pytest.raises(trainer_mod.TrainingError, match="loss became nan at epoch 1"):
        cvapps.train("classify", str(colour_folder), out=str(tmp_path / "nan"), **FAST)


def test_skip_bad_counts_unreadable_images(tmp_path, colour_folder):
    (colour_folder / "train" / "red" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(cvapps.DataError, match="broken.png"):
        cvapps.train("classify", str(colour_folder), out=str(tmp_path / "a"), **{**FAST, "epochs": 1})
    # the worker process that meets the bad file reports it to the main process
    r = cvapps.train("classify", str(colour_folder), out=str(tmp_path / "b"), skip_bad=True, workers=2,
                     **{**FAST, "epochs": 1})
    assert [p.split(": ")[0].endswith("broken.png") and "not a decodable image" in p for p in r["skipped"]] == [True]


def test_worker_processes_do_not_change_the_run(tmp_path, colour_folder):
    """Each sample's augmentation is seeded by (epoch, index): 0 and 2 loader processes train
    the same weights, and differently seeded runs differ (the augmentation is random)."""
    runs = {}
    for name, workers, seed in (("main", 0, 1), ("two", 2, 1), ("other_seed", 2, 2)):
        cvapps.train("classify", str(colour_folder), out=str(tmp_path / name), augment=True, workers=workers,
                     **{**FAST, "epochs": 2, "seed": seed})
        runs[name] = load_file(tmp_path / name / "last.safetensors")
    for k in runs["main"]:
        assert torch.equal(runs["main"][k], runs["two"][k]), k
    assert any(not torch.equal(runs["two"][k], runs["other_seed"][k]) for k in runs["two"])


@pytest.mark.parametrize("kind,rows,metric", [
    ("multilabel", ["red;warm", "blue;cold", "green"], "mAP"),
    ("regression", ["1.0", "-1.0", "0.0"], "MAE"),
    ("binned", ["9.0", "1.0", "5.0"], "MAE"),
])
def test_csv_training_for_every_kind(tmp_path, colour_folder, kind, rows, metric):
    lines = {"train": [], "val": []}
    for split in lines:
        for c, target in zip(["red", "blue", "green"], rows):
            for p in sorted((colour_folder / split / c).glob("*.png")):
                lines[split].append(f"{p},{target}")
    for split, ls in lines.items():
        (tmp_path / f"{split}.csv").write_text("path,label\n" + "\n".join(ls) + "\n")
    extra = {"bins": [0, 10, 5]} if kind == "binned" else {}
    r = cvapps.train("classify", train=str(tmp_path / "train.csv"), val=str(tmp_path / "val.csv"),
                     kind=kind if kind == "binned" else None, out=str(tmp_path / "run"), **extra,
                     **{**FAST, "epochs": 2})
    assert metric in r["val"] and r["val"]["count"] == 9
    model = cvapps.load(tmp_path / "run" / "best.safetensors")
    assert model.kind == kind
    again = cvapps.evaluate(model, str(tmp_path / "val.csv"))
    assert again[metric] == pytest.approx(r["val"][metric])
    pred = model.predict(str(next((colour_folder / "val" / "red").glob("*.png"))))[0]
    if kind == "multilabel":
        assert set(model.labels) == {"red", "blue", "green", "warm", "cold"} and pred.scores.shape == (5,)
    else:
        assert isinstance(pred.value, float) and pred.to_dict() == [{"value": pred.value}]
