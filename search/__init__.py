"""Architecture search: spaces, supernet, latency models, search algorithms, training."""
