"""Video over time: ByteTrack-style multi-object tracking, One-Euro smoothing of keypoints,
line / zone counting. Plain numpy + SciPy on boxes; predictions join in through
``track_boxes`` / ``with_tracks`` (see session.py)."""

from .bytetrack import ByteTracker, TrackOptions
from .counting import LineCounter, ZoneCounter
from .session import Overlay, Trackable, Tracking, TrackingOptions
from .smoothing import OneEuro, SmoothOptions, TrackSmoother

__all__ = ["ByteTracker", "LineCounter", "OneEuro", "Overlay", "SmoothOptions", "TrackOptions", "Trackable",
           "Tracking", "TrackingOptions", "TrackSmoother", "ZoneCounter"]
