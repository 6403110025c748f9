"""Selection strategies on hand-made probability vectors and a toy 2-D set."""

import math

import numpy as np
import pytest
import torch

from cvapps.active import bald, entropy, hybrid, k_center_greedy, least_confidence, margin, rank, random_order, \
    variance

P = torch.tensor([[0.90, 0.05, 0.05],   # confident
                  [0.50, 0.45, 0.05],   # close top-2
                  [0.40, 0.30, 0.30],   # least confident, highest entropy
                  [0.60, 0.20, 0.20]])


def test_uncertainty_rankings():
    assert rank(least_confidence(P), 4) == [2, 1, 3, 0]
    assert rank(margin(P), 1) == [1]  # margin picks the closest top-2
    assert rank(entropy(P), 1) == [2]
    assert entropy(torch.tensor([[0.5, 0.5]]))[0] == pytest.approx(math.log(2))
    assert margin(P)[1] == pytest.approx(1 - 0.05)


def test_bald_zero_when_passes_agree_and_positive_when_they_disagree():
    agree = P.expand(5, 4, 3)
    assert torch.allclose(bald(agree), torch.zeros(4), atol=1e-6)
    disagree = torch.stack([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])])
    assert bald(disagree)[0] == pytest.approx(math.log(2), abs=1e-5)


def test_variance_over_passes():
    preds = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [3.0, 3.0]]])  # (T=2, N=2, D=2)
    assert variance(preds).tolist() == [0.0, 1.0]


def test_core_set_picks_the_farthest_point_first():
    pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [-3.0, 0.0]])
    assert k_center_greedy(pts, 1, labelled=[0])[0] == 3
    assert k_center_greedy(pts, 2, labelled=[0]) == [3, 4]
    assert k_center_greedy(pts.half(), 2, labelled=[0]) == [3, 4]  # float16 embeddings
    assert k_center_greedy(pts, 1)[0] == 3  # nothing labelled: farthest from the mean


def test_hybrid_prefilters_by_uncertainty_then_diversifies():
    scores = torch.tensor([0.9, 0.89, 0.88, 0.1, 0.05])
    emb = torch.tensor([[0.0, 0.0], [0.01, 0.0], [4.0, 4.0], [9.0, 9.0], [-9.0, 0.0]])
    picks = hybrid(scores, emb, budget=2, k=1)  # candidates: the 2 most uncertain only
    assert sorted(picks) == [0, 1]
    picks = hybrid(scores, emb, budget=2, k=2)  # candidates 0, 1, 2, 3 -> diverse pair
    assert 3 in picks and 4 not in picks


def test_random_is_seeded():
    assert random_order(10, 3, seed=1) == random_order(10, 3, seed=1)
    assert len(set(random_order(10, 10))) == 10


# --- cvapps select on every landed task ------------------------------------------------
import csv  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import cvapps  # noqa: E402
from cvapps.active import select as select_mod  # noqa: E402

from conftest import COLOURS, colour_image, run_cli, write_image  # noqa: E402


@pytest.fixture
def pool(tmp_path):
    for i in range(6):
        write_image(tmp_path / "pool" / f"p{i}.png", colour_image(list(COLOURS.values())[i % 3], size=(40, 56), seed=i))
    return tmp_path / "pool"


@pytest.mark.parametrize("task,kwargs,strategy", [
    ("classify", {"backbone": "mobilenet_v3_small", "labels": list(COLOURS), "img_size": 32}, "bald"),
    ("classify", {"backbone": "mobilenet_v3_small", "labels": list(COLOURS), "img_size": 32}, "hybrid"),
    ("detect", {"backbone": "mobilenet_v2", "labels": ["a", "b"], "img_size": 64}, "entropy"),
    ("segment", {"backbone": "segnet_basic", "labels": ["a", "b"], "kind": "segnet", "img_size": 32}, "margin"),
    ("segment", {"backbone": "segnet_basic", "labels": ["a", "b"], "kind": "segnet", "img_size": 32}, "coreset"),
    ("pose", {"backbone": "mobilenet_v3_small", "img_size": [64, 64]}, "least_confidence"),
    ("pose", {"backbone": "mobilenet_v3_small", "img_size": [64, 64], "kind": "regression"}, "hybrid"),
    ("landmarks", {"backbone": "mobilenet_v3_small", "img_size": [64, 64], "schema": "face5", "kind": "regression"},
     "variance"),
])
def test_select_cli_for_each_task(tmp_path, pool, capsys, task, kwargs, strategy):
    torch.manual_seed(0)
    model = cvapps.save(cvapps.create_model(task, **kwargs), tmp_path / "m.safetensors")
    (tmp_path / "labelled.txt").write_text(str(pool / "p0.png") + "\n")
    whole = ["--whole-image"] if task in ("pose", "landmarks") else []  # colour tiles: no people or faces to find
    code, out, err = run_cli(capsys, "select", "--model", model, "--pool", pool, "--budget", 3, "--strategy", strategy,
                             "--exclude", tmp_path / "labelled.txt", "--out", tmp_path / "sel", "--copy-to",
                             tmp_path / "to_label", *whole)
    assert code == 0, err
    sel = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert [r["rank"] for r in sel] == [1, 2, 3] and all(r["strategy"] == strategy for r in sel)
    assert str(pool / "p0.png") not in {r["path"] for r in sel}  # excluded
    if strategy in ("bald", "entropy", "margin", "least_confidence"):  # pure uncertainty ranking: scores descend
        assert [r["score"] for r in sel] == sorted([r["score"] for r in sel], reverse=True)
    assert (tmp_path / "sel" / "contact_sheet.png").is_file() and len(list((tmp_path / "to_label").iterdir())) == 3
    with open(tmp_path / "sel" / "selection.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_select_links_instead_of_copying(tmp_path, pool, tiny_model):
    for _ in range(2):  # the rerun replaces its links instead of failing on them
        sel = cvapps.select(tiny_model, pool, 2, "entropy", out=str(tmp_path / "sel"), copy_to=str(tmp_path / "tl"),
                            link=True)
    made = sorted((tmp_path / "tl").iterdir())
    assert len(made) == 2 and all(p.is_symlink() for p in made)
    assert [p.resolve() for p in made] == [Path(r["path"]).resolve() for r in sel]


def test_rerun_skips_already_scored_images(tmp_path, pool, monkeypatch, tiny_model):
    calls = []
    real = select_mod._scores

    def counting(model, x, *a):
        calls.append(x.shape[0])
        return real(model, x, *a)

    monkeypatch.setattr(select_mod, "_scores", counting)
    cvapps.select(tiny_model, str(pool), 2, "entropy", out=str(tmp_path / "s"), batch_size=4)
    assert sum(calls) == 6
    write_image(pool / "p9.png", colour_image((1, 2, 3)))
    cvapps.select(tiny_model, str(pool), 2, "entropy", out=str(tmp_path / "s"), batch_size=4)
    assert sum(calls) == 7  # only the new image was scored
    with pytest.raises(cvapps.ConfigError, match="another strategy"):
        cvapps.select(tiny_model, str(pool), 2, "margin", out=str(tmp_path / "s"))


def test_unsupported_strategy_names_the_supported_ones(tmp_path, pool):
    m = cvapps.create_model("detect", "mobilenet_v2", labels=["a"], img_size=64)
    with pytest.raises(cvapps.ConfigError, match="'bald' needs mc") as e:
        cvapps.select(m, str(pool), 2, "bald", out=str(tmp_path / "x"))
    assert e.value.hint == "strategies for this model: random, coreset, least_confidence, entropy, hybrid"


def test_pseudo_labels_in_training_formats(tmp_path, pool, tiny_model):
    from cvapps.data.classification import read_csv

    cvapps.select(tiny_model, str(pool), 2, "entropy", out=str(tmp_path / "c"), pseudo_label=0.0)
    # loads as training data with --images POOL (names relative to the pool's folder)
    d = read_csv(tmp_path / "c" / "pseudo_labels.csv", pool, labels=tiny_model.labels)
    assert len(d) == 4 and all(p.is_file() for p in d.paths)  # the pool minus the 2 selected
    det = cvapps.create_model("detect", "mobilenet_v2", labels=["a", "b"], img_size=64)
    cvapps.select(det, str(pool), 1, "entropy", out=str(tmp_path / "d"), pseudo_label=0.0)
    coco = json.loads((tmp_path / "d" / "pseudo_labels_coco.json").read_text())
    assert len(coco["images"]) == 5 and {c["name"] for c in coco["categories"]} == {"a", "b"}
    from cvapps.data.detection import read_coco

    read_coco(tmp_path / "d" / "pseudo_labels_coco.json", pool)  # valid COCO training input


def test_simulator_curves_and_cli(tmp_path, colour_folder, capsys):
    code, out, err = run_cli(capsys, "al-simulate", "classify", "--data", colour_folder, "--backbone",
                             "mobilenet_v3_small", "--img-size", 32, "--initial", 3, "--step", 3, "--rounds", 2,
                             "--strategies", "random,entropy,bald,coreset,hybrid", "--seeds", 2, "--out", tmp_path / "sim")
    assert code == 0, err
    curves = json.loads((tmp_path / "sim" / "curves.json").read_text())
    assert curves["labels"] == [3, 6, 9]
    firsts = {tuple(run[0] for run in c["runs"]) for c in curves["strategies"].values()}
    assert len(firsts) == 1  # every strategy starts from the same labelled images (same first accuracy per seed)
    for c in curves["strategies"].values():
        assert len(c["mean"]) == 3 and len(c["runs"]) == 2
        assert c["mean"] == pytest.approx([sum(r[i] for r in c["runs"]) / 2 for i in range(3)])
    assert (tmp_path / "sim" / "learning_curves.png").is_file()


def test_keypoint_pseudo_labels_are_coco_keypoints(tmp_path, pool):
    from cvapps.data.keypoints import read_coco_keypoints

    m = cvapps.create_model("pose", "mobilenet_v3_small", img_size=[64, 64])
    cvapps.select(m, str(pool), 2, "least_confidence", out=str(tmp_path / "k"), pseudo_label=0.0, whole_image=True)
    d = read_coco_keypoints(tmp_path / "k" / "pseudo_labels_keypoints.json", pool)
    assert len(d) == 4 and d.schema.name == "coco17"  # the 4 unselected images, the model's schema


def test_simulator_for_detection_and_landmarks(tmp_path, capsys):
    from detdata import LAYOUT, make_detection_set
    from kpdata import write_faces

    make_detection_set(tmp_path / "det", layout=LAYOUT * 3)  # 12 images; every 3rd held out (boxes in each split)
    code, out, err = run_cli(capsys, "al-simulate", "detect", "--data", tmp_path / "det" / "coco.json", "--images",
                             tmp_path / "det" / "images", "--val-fraction", 0.34, "--backbone", "mobilenet_v2",
                             "--img-size", 64, "--initial", 3, "--step", 2, "--rounds", 1, "--epochs", 1,
                             "--strategies", "random,least_confidence", "--seeds", 1, "--out", tmp_path / "simd")
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["metric"] == "AP50" and res["labels"] == 5 and set(res["final"]) == {"random", "least_confidence"}
    assert (tmp_path / "simd" / "learning_curves.png").is_file()
    ann = write_faces(tmp_path / "faces", 8)
    curves = cvapps.simulate("landmarks", str(ann), images=str(tmp_path / "faces"), backbone="mobilenet_v3_small",
                             img_size=[64, 64], initial=2, step=2, rounds=1, epochs=1, batch_size=2,
                             strategies=["coreset", "least_confidence"], seeds=1, out=str(tmp_path / "siml"))
    assert curves["metric"] == "NME" and curves["labels"] == [2, 4]
    assert all(len(c["runs"][0]) == 2 for c in curves["strategies"].values())
    with pytest.raises(cvapps.ConfigError, match="do not apply"):
        cvapps.simulate("landmarks", str(ann), images=str(tmp_path / "faces"), backbone="mobilenet_v3_small",
                        img_size=[64, 64], initial=2, step=2, rounds=1, strategies=["bald"], seeds=1,
                        out=str(tmp_path / "x"))


def test_segmentation_simulator_holds_out_when_there_is_no_val_split(tmp_path):
    import shutil

    from segdata import make_seg_set

    root = make_seg_set(tmp_path / "seg", n=8, void=11)  # CamVid layout: void = 11
    shutil.rmtree(root / "val")
    curves = cvapps.simulate("segment", str(root), backbone="mobilenet_v3_small", img_size=32, initial=2,
                             step=2, rounds=1, epochs=1, batch_size=2, strategies=["random", "entropy"], seeds=1,
                             val_fraction=0.25, out=str(tmp_path / "sims"))
    assert curves["metric"] == "mIoU" and curves["labels"] == [2, 4]  # 8 images: 6 in the pool, 2 held out
    firsts = {c["runs"][0][0] for c in curves["strategies"].values()}
    assert len(firsts) == 1  # the same start (labelled images, seeded head) for every strategy


def _colour_video(path, n=40):
    """A video whose colour drifts slowly: neighbouring frames are near-duplicates."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (56, 40))
    for i in range(n):
        rgb = colour_image((int(200 * i / n) + 20, 40, 220 - int(200 * i / n)), size=(40, 56), seed=i)
        w.write(rgb[..., ::-1].copy())
    w.release()
    return path


@pytest.mark.parametrize("strategy", ["entropy", "coreset"])
def test_select_on_a_video_spaces_its_frames_and_writes_them(tmp_path, pool, tiny_model, monkeypatch, strategy):
    import cv2
    import numpy as np

    video = _colour_video(tmp_path / "drive.mp4")
    calls = []
    real = select_mod._scores
    monkeypatch.setattr(select_mod, "_scores", lambda model, x, *a: calls.append(len(x)) or real(model, x, *a))
    kw = dict(out=str(tmp_path / strategy), vid_stride=2, batch_size=8)
    sel = cvapps.select(tiny_model, [str(video), str(pool)], 5, strategy, min_gap=10, **kw)
    assert sum(calls) == 20 + 6  # every 2nd of 40 frames, and the images
    frames = [r["frame"] for r in sel if r["source"] == str(video)]
    assert frames and all(f % 2 == 0 for f in frames)
    assert all(abs(a - b) >= 10 for i, a in enumerate(frames) for b in frames[i + 1:])
    cap = cv2.VideoCapture(str(video))
    decoded = [cap.read()[1] for _ in range(40)]
    for r in sel:
        if r["frame"] is not None:  # written as an image for labelling: exactly that frame
            assert Path(r["path"]).name == f"drive_f{r['frame']:06d}.jpg"
            assert np.abs(cv2.imread(r["path"]).astype(int) - decoded[r["frame"]]).mean() < 3
    # the rule matters: without it, neighbouring frames are picked together
    loose = cvapps.select(tiny_model, [str(video)], 5, strategy, min_gap=1, out=str(tmp_path / f"{strategy}1"),
                          vid_stride=2)
    lf = sorted(r["frame"] for r in loose)
    assert min(b - a for a, b in zip(lf, lf[1:])) < 10
    again = sum(calls)
    cvapps.select(tiny_model, [str(video), str(pool)], 5, strategy, min_gap=10, **kw)
    assert sum(calls) == again  # a rerun scores nothing again


def test_default_strategy_follows_the_model_and_a_short_selection_is_explained(tmp_path, pool, capsys):
    torch.manual_seed(0)
    pose = cvapps.save(cvapps.create_model("pose", "mobilenet_v3_small", img_size=[64, 64]), tmp_path / "p.safetensors")
    code, _, err = run_cli(capsys, "select", "--model", pose, "--pool", pool, "--budget", 2, "--out", tmp_path / "s",
                           "--whole-image")
    assert code == 0, err
    assert {r["strategy"] for r in json.loads((tmp_path / "s" / "selection.json").read_text())} == {"least_confidence"}
    video = _colour_video(tmp_path / "short.mp4", n=20)
    code, _, err = run_cli(capsys, "select", "--model", pose, "--pool", video, "--budget", 5, "--vid-stride", 5,
                           "--min-gap", 12, "--out", tmp_path / "v", "--whole-image")
    assert code == 0, err
    frames = sorted(r["frame"] for r in json.loads((tmp_path / "v" / "selection.json").read_text()))
    assert 1 <= len(frames) <= 2 and all(b - a >= 12 for a, b in zip(frames, frames[1:]))  # of 0, 5, 10, 15
    assert f"selected {len(frames)} of the 5 asked" in err


def test_select_scores_on_onnx_runtime_like_pytorch(tmp_path, pool, capsys, monkeypatch):
    """A model file scored with an output-only strategy runs on ONNX Runtime by default (said
    once); its picks and scores equal --backend torch's."""
    monkeypatch.setenv("CVAPPS_HOME", str(tmp_path / "home"))  # an empty export cache: this run exports
    torch.manual_seed(0)
    model = cvapps.save(cvapps.create_model("detect", "mobilenet_v2", labels=["a", "b"], img_size=64),
                        tmp_path / "m.safetensors")
    rows = {}
    for backend in ("auto", "torch"):
        code, _, err = run_cli(capsys, "select", "--model", model, "--pool", pool, "--budget", 4, "--strategy",
                               "entropy", "--out", tmp_path / backend, "--backend", backend)
        assert code == 0, err
        assert ("exported the model for ONNX Runtime" in " ".join(err.split())) == (backend == "auto")
        rows[backend] = json.loads((tmp_path / backend / "selection.json").read_text())
    assert len(list((tmp_path / "home" / "onnx").glob("*.onnx"))) == 1
    assert [r["path"] for r in rows["auto"]] == [r["path"] for r in rows["torch"]]
    np.testing.assert_allclose([r["score"] for r in rows["auto"]], [r["score"] for r in rows["torch"]], rtol=1e-4)


def test_pseudo_labels_cover_the_videos_other_sampled_frames(tmp_path, pool, tiny_model):
    """With a video in the pool, --pseudo-label labels the sampled frames that were not picked,
    written as images beside the picked ones' folder; the picked frames are not labelled."""
    import csv

    video = _colour_video(tmp_path / "drive.mp4")
    sel = cvapps.select(tiny_model, [str(video), str(pool)], 3, "entropy", out=str(tmp_path / "s"), vid_stride=4,
                        min_gap=8, pseudo_label=0.0)
    picked = {r["frame"] for r in sel if r["frame"] is not None}
    with open(tmp_path / "s" / "pseudo_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    root = tmp_path  # the common folder of the pool and the written frames: names are relative to it
    frames = sorted(int(Path(r["path"]).stem.split("_f")[1]) for r in rows if "pseudo_frames" in r["path"])
    assert frames == sorted(set(range(0, 40, 4)) - picked) and all((root / r["path"]).is_file() for r in rows)
    stills = {str((root / r["path"]).resolve()) for r in rows if "pseudo_frames" not in r["path"]}
    assert stills == {str(p.resolve()) for p in sorted(pool.rglob("*.png"))} - \
        {str(Path(r["source"]).resolve()) for r in sel}


def test_contact_sheet_sets_each_picture_on_its_caption(tmp_path):
    """A wide picture sits on the bottom edge of its tile, centred across, right above its
    caption (it used to hang from the tile's top with a blank band under it); a tall one is
    centred across."""
    import cv2

    wide = write_image(tmp_path / "wide.png", np.full((100, 200, 3), (200, 30, 30), np.uint8))
    tall = write_image(tmp_path / "tall.png", np.full((200, 100, 3), (30, 30, 200), np.uint8))
    select_mod.contact_sheet([{"path": wide, "rank": 1, "score": 0.5}, {"path": tall, "rank": 2, "score": 0.4}],
                             tmp_path / "s.png", tile=64)
    sheet = cv2.cvtColor(cv2.imread(str(tmp_path / "s.png")), cv2.COLOR_BGR2RGB)
    col = sheet[:64, 32]  # the wide picture's middle column: 32 px tall at 64 px wide
    assert (col[:32] == 255).all() and (np.abs(col[32:].astype(int) - [200, 30, 30]) <= 2).all()
    row = sheet[32, 64:128]  # the tall picture: 32 px wide, centred in its tile
    assert (row[:16] == 255).all() and (row[48:] == 255).all()
    assert (np.abs(row[16:48].astype(int) - [30, 30, 200]) <= 2).all()


def test_a_budget_above_the_pool_selects_all_and_says_so(tmp_path, pool, tiny_model):
    import io

    from rich.console import Console

    buf = io.StringIO()
    sel = cvapps.select(tiny_model, pool, 99, "entropy", out=str(tmp_path / "sel"), console=Console(file=buf))
    assert len(sel) == 6 and [r["rank"] for r in sel] == list(range(1, 7))
    assert "--budget 99 is more than the pool's 6 candidates" in buf.getvalue().replace("\n", " ")


def test_select_hands_picks_and_frames_to_label_studio_with_predictions(tmp_path, pool, tiny_model):
    """--to label-studio: one task per pick (video frames as their written images), the
    model's prediction as an editable pre-annotation, the selection score as its score."""
    import json

    video = _colour_video(tmp_path / "drive.mp4")
    out = tmp_path / "sel"
    sel = cvapps.select(tiny_model, [str(video), str(pool)], 4, "entropy", out=str(out), vid_stride=2, min_gap=10,
                        to=("label-studio", str(out / "tasks.json")), ls_config=str(out / "config.xml"),
                        document_root=str(tmp_path), model_version="tiny-v1")
    tasks = json.loads((out / "tasks.json").read_text())
    assert len(tasks) == len(sel) == 4 and any(r["frame"] is not None for r in sel)
    want = {Path(r["path"]).name: r for r in sel}
    for t in tasks:
        ref = t["data"]["image"]
        assert ref.startswith("/data/local-files/?d=")
        row = want[Path(ref).name]
        (pred,) = t["predictions"]
        assert pred["model_version"] == "tiny-v1" and pred["score"] == pytest.approx(row["score"])
        (r,) = pred["result"]
        top = tiny_model.predict([row["path"]])[0].label
        assert r["type"] == "choices" and r["value"]["choices"] == [top]
    config = (out / "config.xml").read_text()
    assert all(f'<Choice value="{c}"/>' in config for c in tiny_model.labels)


@pytest.mark.parametrize("strategy", ["entropy", "coreset", "random"])
def test_sharded_scoring_merges_to_the_unsharded_picks(tmp_path, pool, tiny_model_file, capsys, strategy):
    """`select --shard I/N` on three "machines", then `--merge`: the picks (and scores) of
    one unsharded run, budget and strategy read from the shards' records."""
    import csv

    video = _colour_video(tmp_path / "drive.mp4")
    common = ["--model", tiny_model_file, "--pool", pool, "--pool", video, "--budget", 5, "--strategy", strategy,
              "--vid-stride", 4, "--min-gap", 8, "--seed", 3]
    code, _, err = run_cli(capsys, "select", *common, "--out", tmp_path / "whole")
    assert code == 0, err
    for i in range(3):
        code, out, err = run_cli(capsys, "select", *common, "--shard", f"{i}/3", "--out", tmp_path / f"s{i}")
        assert code == 0 and out.strip() == "", err
    code, _, err = run_cli(capsys, "select", "--merge", tmp_path / "s2", "--merge", tmp_path / "s0", "--out",
                           tmp_path / "merged")
    assert code == 2 and "missing [1]" in err
    code, out, err = run_cli(capsys, "select", *[a for d in ("s2", "s0", "s1") for a in ("--merge", tmp_path / d)],
                             "--out", tmp_path / "merged")
    assert code == 0, err

    def rows(d):
        with open(tmp_path / d / "selection.csv", newline="") as f:
            return [(r["rank"], Path(r["path"]).name, r["frame"], r["score"]) for r in csv.DictReader(f)]

    assert rows("merged") == rows("whole") and len(rows("whole")) == 5
