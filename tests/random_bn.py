"""Test helper: BN layers with non-trivial statistics and affine terms, so a wrongly sliced BN shows in the logits
and the logits depend on the image."""

from collections.abc import Callable

import torch


def input_dependent_bn(net: torch.nn.Module, forward: Callable[[torch.Tensor], object], x: torch.Tensor) -> None:
    """Running statistics measured on ``x`` through ``forward``, then perturbed, with random affine terms.

    A freshly built deep net in eval mode with made-up statistics shrinks the signal to nothing:
    its logits are the BN biases, the same for every image, and an equivalence check does not see the input. Here
    each BN sees its input at unit scale, so the logits depend on the image, while the perturbation (means moved by
    up to half a std, variances scaled by 0.5..1.5) and affine terms still make a wrongly sliced BN show.
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    was_training, momenta = net.training, [m.momentum for m in bns]
    net.eval()
    for m in bns:
        m.momentum = 1.0  # one batch: its statistics replace the running ones
        m.train()
    with torch.no_grad():
        forward(x)
    g = torch.Generator().manual_seed(0)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
        c, std = m.num_features, m.running_var.sqrt()
        m.running_mean.add_((torch.rand(c, generator=g) - 0.5) * std)
        m.running_var.mul_(torch.rand(c, generator=g) + 0.5)
        m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
        m.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    net.train(was_training)
