"""Supernet-inherited accuracy: extract a subnet, recalibrate its BN on training images, score the val split.

The validation split is held out from the training set (class-balanced, fixed seed: the same split the supernet
training held out); the calibration images are a fixed class-balanced subset of the remaining training images,
unaugmented, 200 a batch as in Once-for-All. The test set is never touched here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from search.elastic.space import ElasticSpace, Subnet
from search.elastic.supernet import ElasticSupernet, recalibrate_bn
from search.training.data import build_train_data
from zoo.datasets import balanced_subset
from zoo.evaluate import accumulate, summarize

CALIB_BATCH = 200


@dataclass
class SubnetEvaluator:
    """Fixed calibration batches and validation loader: every subnet is scored on the same images."""

    calib: list[torch.Tensor]
    val: object  # a search.training.data loader (eval mode: fixed order, no augmentation)
    device: torch.device

    @classmethod
    def for_training(
        cls,
        dataset: str,
        data_dir: str | None,
        space: ElasticSpace,
        val_size: int,
        calib_images: int,
        device: torch.device | str = "cpu",
        limit_train: int | None = None,
        val_limit: int | None = None,
    ) -> SubnetEvaluator:
        """The split of a supernet training with ``val_size`` held out; ``val_limit`` scores its first N only."""
        data = build_train_data(
            dataset,
            data_dir,
            1,  # the loader is only read for calibration batches below: any training-set size will do
            input_size=space.backbone.input_size,
            device=device,
            val_size=val_size,
            limit_train=limit_train,
            eval_batch_size=500,
            channels_last=True,
        )
        train, val = data.train, data.val
        keep = balanced_subset(train.labels.cpu(), min(calib_images, train.num_samples), seed=1).to(train.labels.device)
        train.images, train.labels = train.images[keep], train.labels[keep]
        train.train, train.batch_size = False, CALIB_BATCH  # in order, unaugmented, last partial batch kept
        calib = [x for x, _ in train]
        if val_limit is not None:
            val.images, val.labels = val.images[:val_limit], val.labels[:val_limit]
        return cls(calib, val, torch.device(device))

    def _recalibrated(self, supernet: ElasticSupernet, subnet: Subnet) -> torch.nn.Module:
        """``subnet`` extracted with the supernet's weights and its BN statistics recalibrated on ``calib``."""
        net = supernet.extract(subnet).to(memory_format=torch.channels_last)
        recalibrate_bn(net, self.calib)
        return net

    def top1(self, supernet: ElasticSupernet, subnet: Subnet) -> float:
        """Top-1 (fraction) on the val split of ``subnet`` with the supernet's weights, BN recalibrated."""
        return float(summarize(accumulate(self._recalibrated(supernet, subnet), self.val, self.device)).top1)

    def answers(self, supernet: ElasticSupernet, subnet: Subnet) -> torch.Tensor:
        """Which validation images ``subnet`` gets right (inherited, BN recalibrated): paired tests need them."""
        net = self._recalibrated(supernet, subnet).eval()
        with torch.inference_mode():
            return torch.cat([net(x.to(self.device)).argmax(1).cpu() == y.cpu() for x, y in self.val])

    @classmethod
    def for_supernet(
        cls, space: ElasticSpace, recipe: dict, data_dir: str | None = None, val_limit: int | None = None
    ) -> SubnetEvaluator:
        """The validation split and calibration images of the run that trained a supernet (its ``recipe``)."""
        return cls.for_training(
            recipe["dataset"],
            data_dir,
            space,
            recipe["val_size"],
            recipe["calib_images"],
            "cpu",
            recipe.get("limit_train"),
            val_limit,
        )
