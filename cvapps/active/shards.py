"""Selection over a pool split across machines without a cluster engine: ``select --shard
I/N`` scores the I-th of N interleaved parts of the pool (on SLURM array tasks, Kubernetes
jobs, plain machines) and records it; ``merge`` reads the N shard folders, restores the
pool's order and picks exactly as one unsharded run would (budget, strategy, seed, gap and
k from the shards' records)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.io import out_dir as checked_dir
from ..errors import ConfigError, DataError
from .select import _write, choose, save_frames, scored

EMBEDDED = ("coreset", "hybrid")  # strategies whose shards wrote embeddings


def read_records(dirs: list[str | Path]) -> list[tuple[Path, dict]]:
    """Each shard folder with its record, checked: one record per shard 0..N-1, one set of options."""
    out = []
    for d in map(Path, dirs):
        f = d / "shard.json"
        if not f.is_file():
            raise DataError("not a finished shard (no shard.json)", path=str(d),
                            hint="run `cvapps select --shard I/N --out DIR` to completion first")
        try:
            out.append((d, json.loads(f.read_text())))
        except json.JSONDecodeError as e:
            raise DataError(f"broken shard record: {e}", path=str(f)) from None
    if not out:
        raise ConfigError("--merge needs the shard folders")
    n, opts = out[0][1]["of"], out[0][1]["options"]
    for d, rec in out:
        if rec["of"] != n or rec["options"] != opts:
            raise DataError(f"shard {rec['shard']}/{rec['of']} was scored with other options than shard "
                            f"{out[0][1]['shard']}/{n} ({out[0][0]})", path=str(d))
    seen = sorted(rec["shard"] for _, rec in out)
    if seen != list(range(n)):
        missing = sorted(set(range(n)) - set(seen))
        twice = sorted({s for s in seen if seen.count(s) > 1})
        raise ConfigError(f"--merge needs shards 0..{n - 1} once each: "
                          + (f"missing {missing}" if missing else "") + ("; " if missing and twice else "")
                          + (f"given twice {twice}" if twice else ""))
    return out


def merge(dirs: list[str | Path], out: str | Path, copy_to: str | None = None, link: bool = False, model=None,
          console=None) -> list[dict]:
    """The picks of the N shard folders ``dirs``, written to ``out`` as ``select`` writes them."""
    records = read_records(dirs)
    opts = records[0][1]["options"]
    out_dir = checked_dir(out, "--out")
    rows = []
    for d, rec in records:
        dim = 0
        if opts["strategy"] in EMBEDDED:
            n_rows = sum(1 for _ in open(d / "scores.csv")) - 1
            dim = (d / "embeddings.f16").stat().st_size // (2 * max(n_rows, 1))
        keys, scores, emb = scored(d, None, dim)
        pos = rec["positions"]
        for j, key in enumerate(keys):
            if key[0] not in pos:
                raise DataError(f"{key[0]} is scored but not in the shard's record", path=str(d / "scores.csv"))
            rows.append(((pos[key[0]], -1 if key[1] is None else key[1]), key, scores[j],
                         emb[j] if emb is not None else None))
    rows.sort(key=lambda r: r[0])  # the whole pool's order, frames in order: as one run scores it
    keys = [r[1] for r in rows]
    scores = torch.stack([r[2] for r in rows]) if rows else torch.zeros(0)
    emb = torch.stack([r[3] for r in rows]) if rows and rows[0][3] is not None else None
    sel = choose(keys, scores, emb, opts["strategy"], opts["budget"], opts["k"], opts["seed"], opts["min_gap"],
                 console)
    save_frames(sel, out_dir / "frames")
    _write(sel, out_dir, copy_to, model, link)
    return sel
