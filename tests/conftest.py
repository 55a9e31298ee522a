"""Suite-wide settings: one torch thread (2-core CI machines thrash with more), headless plotting."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch

torch.set_num_threads(1)
