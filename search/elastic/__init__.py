"""Once-for-All style elastic supernet: one set of weights for every subnet of a space, specialized afterwards.

``space`` (the elastic space and its subnets) -> ``layers`` (ops that run any kernel / expand of their weights)
-> ``supernet`` (forward of any subnet, extraction to a zoo network, BN recalibration) -> ``train`` (sandwich rule
with in-place distillation). The search over a trained supernet lives beside them.
"""
