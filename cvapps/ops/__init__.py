"""Pure tensor functions (boxes: xyxy input pixels unless a docstring says otherwise)."""

from .anchors import ANCHORS, default_boxes
from .box_coding import decode_boxes, encode_boxes
from .matching import BACKGROUND, IGNORE, match_anchors

__all__ = ["ANCHORS", "BACKGROUND", "IGNORE", "decode_boxes", "default_boxes", "encode_boxes", "match_anchors"]
