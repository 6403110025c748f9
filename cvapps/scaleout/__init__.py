"""Beyond one machine: ``--engine ray`` runs predict, select, embed and evaluate on a Ray
cluster (cvapps.scaleout.jobs); Ray is the optional ``[ray]`` extra."""

from .jobs import embed_sources, evaluate, predict, select

__all__ = ["embed_sources", "evaluate", "predict", "select"]
