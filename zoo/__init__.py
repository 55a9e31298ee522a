"""proxyless-zoo: hardware-specialized ProxylessNAS networks."""
