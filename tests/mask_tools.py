"""Mask comparisons shared by the segmentation tests (IoU, and growing or shrinking a mask by px)."""
from __future__ import annotations

import cv2
import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1,) * 2)) > 0


def shrink(mask: np.ndarray, px: int) -> np.ndarray:
    return ~grow(~mask, px)
