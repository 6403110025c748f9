import json

import pytest
import torch
from conftest import interrupt_at_epoch
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
    undo = interrupt_at_epoch(monkeypatch, 2)  # as if killed during the third epoch
    with pytest.raises(KeyboardInterrupt):
        cvapps.train("classify", str(colour_folder), out=str(part), **FAST)
    undo()
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


def _trainer(model, colour_folder, out, evaluate_start=False, **cfg):
    """A Trainer on the colour classes, as cvapps.train builds it."""
    import io

    from rich.console import Console

    from cvapps.options import DataOptions

    spec = model.spec
    tr, va = spec.read_train(DataOptions.parse({}, data=str(colour_folder)))
    make_train, val_ds = spec.datasets(model, tr, va)
    log = io.StringIO()
    config = trainer_mod.TrainConfig.parse({"epochs": 2, "batch_size": 6, "lr": 3e-3, "warmup_epochs": 0,
                                            "out_dir": str(out), **cfg})
    return trainer_mod.Trainer(model, config, make_train, val_ds, Console(file=log, width=300),
                               evaluate_start=evaluate_start), log


def test_a_working_start_stays_best_unless_training_beats_it(tmp_path, colour_folder):
    """Fine-tuning a model that already works is judged against where it started: epoch 0 is
    evaluated, and when no epoch beats it (here a wrecking learning rate), best.safetensors is
    the starting model, said in a note."""
    good = tmp_path / "good"  # a start that works (MobileNetV3 from scratch on 18 images stays at chance, and
    # then whether a wrecked epoch "beats" it was a coin toss of rounding: it failed on one thread)
    cvapps.train("classify", str(colour_folder), out=str(good), img_size=32, backbone="resnet18", epochs=6,
                 batch_size=6, lr=3e-3, warmup_epochs=0.5, seed=1, augment=False)
    start = cvapps.load(good / "best.safetensors")
    tensors = {k: v.clone() for k, v in start.state_dict().items()}
    trainer, log = _trainer(start, colour_folder, tmp_path / "ft", evaluate_start=True, lr=5.0, clip_grad=None)
    r = trainer.fit()
    assert r["best_epoch"] == 0 and r["epochs_run"] == 2
    recs = [json.loads(ln) for ln in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["epoch"] == 0 and "train_loss" not in recs[0] and recs[0]["top1"] == 1.0
    for rec in recs[1:]:  # no epoch beat it: a lower top-1, or the same with a higher validation loss
        assert rec["top1"] < recs[0]["top1"] or (rec["top1"] == recs[0]["top1"] and rec["val_loss"] > recs[0]["val_loss"])
    saved = load_file(tmp_path / "ft" / "best.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in tensors.items())
    assert "no epoch beat the starting model" in " ".join(log.getvalue().split())


def test_ema_weights_are_the_average_of_the_steps_and_resume_exactly(tmp_path, colour_folder, monkeypatch):
    from torch.optim.swa_utils import AveragedModel

    seen = []
    real = AveragedModel.update_parameters

    def record(self, model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(self, model)

    monkeypatch.setattr(AveragedModel, "update_parameters", record)
    torch.manual_seed(0)
    m = cvapps.create_model("classify", "mobilenet_v3_small", labels=["blue", "green", "red"], img_size=32)
    trainer, _ = _trainer(m, colour_folder, tmp_path / "ema", epochs=1, batch_size=9, ema=0.75)
    trainer.fit()
    assert len(seen) == 2  # 18 images, batches of 9
    last = load_file(tmp_path / "ema" / "last.safetensors")
    for k, v in last.items():
        if v.is_floating_point():  # the first step's weights, then 0.75 x them + 0.25 x the second's
            torch.testing.assert_close(v, 0.75 * seen[0][k] + 0.25 * seen[1][k], rtol=1e-5, atol=1e-6)
    # exact resume: two epochs in one go == one epoch, then --resume for the second
    monkeypatch.setattr(AveragedModel, "update_parameters", real)
    torch.manual_seed(0)
    m1 = cvapps.create_model("classify", "mobilenet_v3_small", labels=["blue", "green", "red"], img_size=32)
    _trainer(m1, colour_folder, tmp_path / "full", epochs=2, batch_size=9, ema=0.75)[0].fit()
    torch.manual_seed(0)
    m2 = cvapps.create_model("classify", "mobilenet_v3_small", labels=["blue", "green", "red"], img_size=32)
    undo = interrupt_at_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        _trainer(m2, colour_folder, tmp_path / "part", epochs=2, batch_size=9, ema=0.75)[0].fit()
    undo()
    m3 = cvapps.create_model("classify", "mobilenet_v3_small", labels=["blue", "green", "red"], img_size=32)
    _trainer(m3, colour_folder, tmp_path / "part", epochs=2, batch_size=9, ema=0.75, resume=True)[0].fit()
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "part" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fixed_norm_stats_train_the_weights_but_keep_the_statistics(tmp_path, colour_folder):
    torch.manual_seed(0)
    m = cvapps.create_model("classify", "mobilenet_v3_small", labels=["blue", "green", "red"], img_size=32)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    _trainer(m, colour_folder, tmp_path / "fixed", epochs=1, norm_stats="fixed")[0].fit()
    after = load_file(tmp_path / "fixed" / "last.safetensors")
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in before if k.endswith(".weight") and not k.endswith("running_var")]
    assert stats and all(torch.equal(after[k], before[k]) for k in stats)
    assert any(not torch.equal(after[k], before[k]) for k in weights)
    torch.manual_seed(0)
    m2 = cvapps.create_model("classify", "mobilenet_v3_small", labels=["blue", "green", "red"], img_size=32)
    _trainer(m2, colour_folder, tmp_path / "update", epochs=1)[0].fit()
    moved = load_file(tmp_path / "update" / "last.safetensors")
    assert any(not torch.equal(moved[k], before[k]) for k in stats)  # the default updates them


def test_freeze_none_overrides_a_weights_recipe_that_freezes():
    from cvapps.training.trainer import TrainConfig

    assert TrainConfig.parse({"freeze": "backbone"}).freeze == "backbone"
    assert TrainConfig.parse({"freeze": "backbone", **{"freeze": "none"}}).freeze is None
