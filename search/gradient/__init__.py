"""The paper's gradient search (ProxylessNAS-G, and -R by REINFORCE): the over-parameterized supernet, its binary
gates, the latency objective, derivation, the convergence log, warm starts from an elastic supernet, comparison.

``config`` (SearchConfig) -> ``search`` (the Search loop) -> ``cli`` (``proxyless search warmup|run|compare``).
"""
