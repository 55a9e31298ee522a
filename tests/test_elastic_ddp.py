"""Two-process supernet training (gloo, CPU) as torchrun runs it: the ranks draw the same subnets, average their
gradients and end with the same weights and buffers; only rank 0 writes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torchrun_env import free_port, set_rank_env


def _rank_main(rank: int, port: int, tmp: str) -> None:
    set_rank_env(rank, port)
    torch.set_num_threads(1)
    from search.elastic.train import ElasticTrainConfig, ElasticTrainer
    from search.training import distributed as dist

    config = ElasticTrainConfig(
        out=f"{tmp}/run",
        dataset="synthetic",
        epochs=1,
        batch_size=32,
        limit_train=128,
        val_size=200,
        calib_images=64,
        lr=0.4,
        warmup_epochs=0.2,
        progress=False,
    )
    trainer = ElasticTrainer(config)
    assert (dist.rank(), dist.world_size()) == (rank, 2)
    result = trainer.run()
    state = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    state |= {f"ema.{k}": v for k, v in trainer.ema.module.state_dict().items()}
    torch.save(state, f"{tmp}/rank{rank}.pt")
    Path(f"{tmp}/result{rank}.json").write_text(json.dumps(result))
    dist.cleanup()


def test_two_rank_supernet_training_ranks_agree(tmp_path: Path) -> None:
    mp.spawn(_rank_main, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-6, atol=1e-7), k
    r0 = json.loads((tmp_path / "result0.json").read_text())
    assert r0["finished"] and r0["steps"] == 4 and "val_top1_largest" in r0
    assert (tmp_path / "run" / "supernet.safetensors").is_file()
