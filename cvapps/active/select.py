"""Pool scoring and selection for any task. Scores (and, for core-set, float16 embeddings)
are appended to ``out/scores.csv`` / ``out/embeddings.f16`` as batches finish, so an
interrupted run keeps its work and a re-run with the same arguments skips scored images.
Memory: one batch of images plus, for core-set, a memory-mapped N x D float16 array."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..data.io import is_image
from ..errors import ConfigError, DataError
from ..inference.runner import stack_inputs
from ..inference.sources import batched, expand_sources, iter_frames, prefetch
from .strategies import STRATEGIES, bald, entropy, hybrid, k_center_greedy, least_confidence, margin, rank, \
    random_order, variance

_PROB_FNS = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}


def supported(model) -> list[str]:
    """Strategies this model's outputs support."""
    base = ["random", "coreset"]
    if model.task == "classify" and model.kind in ("multiclass", "binned"):
        return base + ["least_confidence", "margin", "entropy", "bald", "hybrid"]
    if model.task == "classify" and model.kind == "regression":
        return base + ["variance"]
    if model.task == "detect":
        return base + ["least_confidence", "entropy", "hybrid"]
    if model.task == "segment":
        return base + ["entropy", "margin", "hybrid"]
    if model.task in ("landmarks", "pose"):
        heat = model.config["head"]["kind"] == "heatmap"
        return base + (["least_confidence"] if heat else []) + ["variance", "hybrid"]
    return base


def per_image(values: torch.Tensor, counts: list[int] | None, reduce: str = "max") -> torch.Tensor:
    """(sum(counts), ...) crop values -> (len(counts), ...) per image (max or mean); an
    image without instances scores 0 (nothing there the model could learn from)."""
    if counts is None:
        return values
    out, i = [], 0
    for n in counts:
        chunk = values[i : i + n]
        if n == 0:
            out.append(torch.zeros(values.shape[1:], dtype=values.dtype))
        else:
            out.append(chunk.max(0).values if reduce == "max" else chunk.mean(0))
        i += n
    return torch.stack(out)


def _scores(model, x: torch.Tensor, metas: list[dict], strategy: str, mc_passes: int) -> torch.Tensor:
    """(B,) uncertainty of one batch (higher = label first)."""
    if strategy in ("random", "coreset"):
        return torch.zeros(x.shape[0])
    if model.task == "classify":
        if strategy in ("bald", "variance"):
            cached = model.cache_features(model.forward_features(x))  # the backbone once, the head T times
            model.head.dropout.train()  # MC dropout: only the head's dropout is stochastic
            try:
                out = [model.forward_cached(cached).logits.float() for _ in range(mc_passes)]
            finally:
                model.head.dropout.eval()
            return variance(torch.stack(out)) if strategy == "variance" else bald(torch.stack(out).softmax(-1))
        probs = model(x).logits.float().softmax(1)
        return _PROB_FNS["entropy" if strategy == "hybrid" else strategy](probs)
    if model.task in ("landmarks", "pose"):  # per crop; reduced per image by the caller
        if strategy == "variance" or (strategy == "hybrid" and model.config["head"]["kind"] == "regression"):
            return model.mc_variance(x, mc_passes).cpu()
        return model.uncertainty(model(x)).cpu()
    raw = model(x)
    if model.task == "segment":
        return model.uncertainty(raw, metas, kind="margin" if strategy == "margin" else "entropy")
    return model.uncertainty(raw, kind="entropy" if strategy in ("entropy", "hybrid") else "least_confidence")


def _read_done(scores_csv: Path) -> dict[str, float]:
    if not scores_csv.is_file():
        return {}
    with open(scores_csv, newline="") as f:
        return {r["path"]: float(r["score"]) for r in csv.DictReader(f)}


@torch.inference_mode()
def select(model, pool, budget: int, strategy: str = "entropy", exclude: str | None = None,
           out: str = "runs/select", batch_size: int = 16, mc_passes: int = 10, k: int = 5, seed: int = 0,
           copy_to: str | None = None, link: bool = False, pseudo_label: float | None = None,
           console: Console | None = None) -> list[dict]:
    """Rank the images of ``pool`` (folder, glob, list file, or paths) and pick ``budget``.
    Writes out/selection.csv + .json (path, score, rank, strategy) and out/contact_sheet.png;
    with ``copy_to`` copies the picks there (``link=True``: symbolic links to the originals,
    for pools too large to duplicate); with ``pseudo_label`` (a confidence threshold)
    also writes the confident predictions on the rest of the pool as training labels
    (cvapps.active.pseudo). Returns the selection rows."""
    console = console or Console(stderr=True)
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}", hint=f"one of {', '.join(STRATEGIES)}")
    ok = supported(model)
    if strategy not in ok:
        raise ConfigError(f"strategy {strategy!r} needs {STRATEGIES[strategy].needs}, which a {model.task} "
                          f"model does not provide", hint=f"strategies for this model: {', '.join(ok)}")
    items = [p for p in expand_sources(pool if isinstance(pool, (list, tuple)) else [pool])
             if isinstance(p, Path) and is_image(p)]
    if exclude:
        ex = {ln.strip() for ln in Path(exclude).read_text().splitlines() if ln.strip()}
        items = [p for p in items if str(p) not in ex and p.name not in ex]
    if not items:
        raise DataError("no images left in the pool to score", path=str(pool))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores_csv, emb_file = out_dir / "scores.csv", out_dir / "embeddings.f16"
    state = {"strategy": strategy, "task": model.task, "labels": model.labels}
    state_file = out_dir / "state.json"
    if state_file.is_file() and json.loads(state_file.read_text()) != state:
        raise ConfigError(f"{out_dir} holds scores of another strategy or model", path=str(state_file),
                          hint="use a new --out, or delete that folder")
    state_file.write_text(json.dumps(state))
    done = _read_done(scores_csv)
    todo = [p for p in items if str(p) not in done]
    need_emb = strategy in ("coreset", "hybrid")
    if need_emb and emb_file.exists():  # a kill between the two writes leaves extra embedding rows
        with open(emb_file, "r+b") as ef:
            ef.truncate(len(done) * model.backbone.out_channels * 2)
    if done:
        console.print(f"resuming: {len(done)} images already scored in {scores_csv}")
    model.eval()
    pre = model.preprocessor()
    new_file = not scores_csv.exists()
    with open(scores_csv, "a", newline="") as f, open(emb_file, "ab") as ef:
        w = csv.writer(f)
        if new_file:
            w.writerow(["path", "score"])
        bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=console, transient=True)
        with bar:
            tid = bar.add_task("score", total=len(todo))
            frames = prefetch(iter_frames(todo), pre)
            for batch in batched(frames, batch_size):
                good = [fr for fr in batch if fr.error is None]
                for fr in batch:
                    if fr.error is not None:
                        console.print(f"[red]skipped[/red] {fr.error.one_line()}", highlight=False)
                if good:
                    x, counts = stack_inputs([fr.payload[0] for fr in good])  # counts: crops per image
                    x = pre.normalize(x.to(model.device))
                    metas = [fr.payload[1] for fr in good]
                    s = per_image(_scores(model, x, metas, strategy, mc_passes), counts) if len(x) else \
                        torch.zeros(len(good))
                    rows = [[fr.source, f"{float(v):.6g}"] for fr, v in zip(good, s)]
                    if need_emb:
                        d = model.backbone.out_channels
                        crops = model.forward_features(x)[-1].float().mean((2, 3)).cpu() if len(x) else \
                            torch.zeros(0, d)
                        emb = per_image(crops, counts, "mean").numpy().astype(np.float16)
                        ef.write(emb.tobytes())
                        ef.flush()
                    w.writerows(rows)
                    f.flush()
                bar.advance(tid, len(batch))
    done = _read_done(scores_csv)
    order_paths = list(done)
    scores = torch.tensor([done[p] for p in order_paths])
    wanted = {str(p) for p in items}
    keep = [i for i, p in enumerate(order_paths) if p in wanted]
    if strategy == "random":
        picks = [keep[i] for i in random_order(len(keep), budget, seed)]
    elif need_emb:
        d = model.backbone.out_channels
        emb = torch.from_numpy(np.memmap(emb_file, np.float16, "r").reshape(-1, d)[keep].astype(np.float32))
        local = k_center_greedy(emb, budget) if strategy == "coreset" else hybrid(scores[keep], emb, budget, k)
        picks = [keep[i] for i in local]
    else:
        picks = [keep[i] for i in rank(scores[keep], budget)]
    sel = [{"path": order_paths[i], "score": float(scores[i]), "rank": r + 1, "strategy": strategy}
           for r, i in enumerate(picks)]
    _write(sel, out_dir, copy_to, model, link)
    if pseudo_label is not None:
        from .pseudo import write_pseudo_labels

        chosen = {r["path"] for r in sel}
        info = write_pseudo_labels(model, [p for p in items if str(p) not in chosen], pseudo_label, out_dir,
                                   batch_size)
        console.print(f"pseudo-labels for {info['written']} images (confidence >= {pseudo_label}) in {info['file']}")
    return sel


def _write(sel: list[dict], out_dir: Path, copy_to: str | None, model=None, link: bool = False) -> None:
    with open(out_dir / "selection.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["rank", "path", "score", "strategy"])
        w.writeheader()
        w.writerows(sel)
    (out_dir / "selection.json").write_text(json.dumps(sel, indent=1))
    contact_sheet(sel, out_dir / "contact_sheet.png", model)
    if copy_to:
        dest = Path(copy_to)
        dest.mkdir(parents=True, exist_ok=True)
        for row in sel:
            target = dest / f"{row['rank']:04d}_{Path(row['path']).name}"
            if link:
                target.unlink(missing_ok=True)  # a rerun replaces its own links
                target.symlink_to(Path(row["path"]).resolve())
            else:
                shutil.copy2(row["path"], target)


def contact_sheet(sel: list[dict], path: Path, model=None, cols: int = 6, tile: int = 160, limit: int = 60) -> None:
    """Grid of the selected images with rank and score under each; for detection,
    segmentation and keypoint models the predictions are drawn on the tiles."""
    import cv2

    from ..data.io import read_image

    rows = sel[:limit]
    if not rows:
        return
    cols = min(cols, len(rows))
    n_rows = (len(rows) + cols - 1) // cols
    sheet = np.full((n_rows * (tile + 24), cols * tile, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        img = read_image(row["path"])
        if model is not None and model.task in ("detect", "segment", "landmarks", "pose"):
            img = model.predict(img)[0].draw(img)
        s = tile / max(img.shape[:2])
        img = cv2.resize(img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))))
        y, x = (i // cols) * (tile + 24), (i % cols) * tile
        sheet[y : y + img.shape[0], x : x + img.shape[1]] = img
        cv2.putText(sheet, f"#{row['rank']} {row['score']:.3f}", (x + 4, y + tile + 17), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
