"""Heatmap overlays for people: evaluation reports, `predict`, alarm evidence and the preview (numpy + cv2)."""

from __future__ import annotations

import cv2
import numpy as np

OVERLAY_ALPHA = 0.45


def heatmap_overlay(image_bgr: np.ndarray, amap: np.ndarray, vmin: float, vmax: float,
                    threshold: float | None = None) -> np.ndarray:
    """JET heatmap of `amap` scaled to [vmin, vmax], blended over the image (resized to it)."""
    h, w = image_bgr.shape[:2]
    m = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    norm = np.clip((m - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(image_bgr, 1 - OVERLAY_ALPHA, heat, OVERLAY_ALPHA, 0)
    if threshold is not None:
        contours, _ = cv2.findContours((m >= threshold).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out

