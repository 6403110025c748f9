from .model import SegmentationModel, SegRaw
from .postprocess import SegMask

__all__ = ["SegMask", "SegRaw", "SegmentationModel"]
