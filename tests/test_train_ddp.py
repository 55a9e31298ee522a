"""Two-process DDP training (gloo, CPU) as torchrun runs it: both ranks end with the same weights and buffers."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torchrun_env import free_port, set_rank_env

TINY = {
    "format": "proxyless-arch/1",
    "name": "tiny",
    "blocks": ["mb1_k3_s1_c8", "mb3_k3_s2_c16"],
    "stem_channels": 8,
    "stem_stride": 1,
    "feature_mix": 16,
    "in_chans": 1,
    "input_size": 28,
    "num_classes": 10,
}


def _rank_main(rank: int, port: int, tmp: str) -> None:
    """One torchrun-style process: the environment torchrun sets, then an ordinary training run."""
    set_rank_env(rank, port)
    torch.set_num_threads(1)
    from search.training import distributed as dist
    from search.training.train import TrainConfig, Trainer

    config = TrainConfig(
        arch=f"{tmp}/tiny.json", out=f"{tmp}/run", dataset="synthetic", epochs=1, batch_size=32, limit_train=320
    )
    config.lr, config.warmup_epochs, config.progress = 0.8, 0.2, False
    trainer = Trainer(config)
    assert (dist.rank(), dist.world_size()) == (rank, 2)
    result = trainer.run()
    state = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    state |= {f"ema.{k}": v for k, v in trainer.ema.module.state_dict().items()}
    torch.save(state, f"{tmp}/rank{rank}.pt")
    Path(f"{tmp}/result{rank}.json").write_text(json.dumps(result))
    dist.cleanup()


def test_two_rank_ddp_ranks_agree(tmp_path: Path) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    mp.spawn(_rank_main, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    r0, r1 = (json.loads((tmp_path / f"result{r}.json").read_text()) for r in (0, 1))
    assert r0["finished"] and r0["n"] == r1["n"] == 500 and r0["top1"] == r1["top1"]  # eval summed over shards
    assert r0["world_size"] == 2 and "world_size" not in r1  # only rank 0 writes
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["top1"] == r0["top1"]
    assert len(json.loads((tmp_path / "run" / "log.json").read_text())["epochs"]) == 1
