from .model import LandmarkModel

__all__ = ["LandmarkModel"]
