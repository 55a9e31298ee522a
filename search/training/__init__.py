"""Generic training, shared by the gradient search, the elastic supernet and plain nets: data loaders, the
resumable epoch loop, torch.distributed helpers, the recipe (parameter groups, lr schedule, EMA), statistics.

It imports no other package of search/ but the spaces, so that gradient/ and elastic/ can both build on it.
"""
