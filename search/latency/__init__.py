"""Latency models for the search: lookup tables measured per device/runtime, the Pixel-1 predictor, MACs."""

from search.latency.lut import LatencyError
from search.latency.predict import Breakdown, LatencyModel, expected_latency, load_latency_model

__all__ = ["Breakdown", "LatencyError", "LatencyModel", "expected_latency", "load_latency_model"]
