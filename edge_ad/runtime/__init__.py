"""Inference backends behind one Detector interface; importing this package never imports torch."""

from edge_ad.runtime.base import Detector, Result

__all__ = ["Detector", "Result"]
