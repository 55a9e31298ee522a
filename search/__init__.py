"""Architecture search: ``space`` (the spaces), ``latency/``, ``training/``, ``elastic/`` and ``gradient/``."""
