from .model import PoseModel

__all__ = ["PoseModel"]
