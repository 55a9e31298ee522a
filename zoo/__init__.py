"""proxyless-zoo: hardware-specialized ProxylessNAS networks."""

from zoo.registry import ModelInfo, create_model, get_model_info, list_models, register_model

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "register_model"]
