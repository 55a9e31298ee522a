"""``proxyless search warmup|run|compare``: the gradient search's subcommands, options from ``SearchConfig``."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import Any

from search.gradient.compare import add_parser as add_compare_parser
from search.gradient.config import ALGOS, SearchConfig
from search.gradient.gates import GRAD_MODES
from search.gradient.objective import LOSSES
from search.gradient.search import Search
from search.latency.predict import TARGETS
from search.training import distributed as D


def _common(p: argparse.ArgumentParser) -> None:
    d = SearchConfig(out="")
    p.add_argument("--space", default=d.space, help="search space (search/space.py)")
    p.add_argument("--dataset", default=d.dataset, help="fashion-mnist, cifar10 or synthetic")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: the dataset's usual place)")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.json, probs.csv, tb/ ...")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch of weight steps")
    p.add_argument("--val-size", type=int, default=d.val_size, help="class-balanced held-out split for alpha")
    p.add_argument("--limit-train", type=int, default=None, help="class-balanced subset of the training split")
    p.add_argument("--warmup-lr", type=float, default=d.warmup_lr, help="cosine from this over the warm-up")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu or cuda (torchrun: one GPU per local rank)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument(
        "--init-elastic",
        default=None,
        help="start every candidate from a trained elastic supernet: a folder, hf-hub:ORG/REPO, or 'bundled'",
    )
    p.add_argument("--ckpt-every", type=int, default=0, help="also checkpoint every N steps (0: epoch ends only)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bars")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``warmup``, ``run`` and ``compare`` on ``proxyless search``."""
    d = SearchConfig(out="")
    w = subparsers.add_parser("warmup", help="train supernet weights on uniformly sampled paths (shared warm-up)")
    _common(w)
    w.add_argument("--epochs", type=int, default=d.warmup_epochs, help="warm-up epochs")
    w.set_defaults(func=_cmd_warmup)

    r = subparsers.add_parser("run", help="architecture search (ProxylessNAS-G or -R) for one latency target")
    _common(r)
    r.add_argument("--target", default=d.target, help=f"{', '.join(TARGETS)}, or a LUT file")
    r.add_argument("--lut", default=None, help="LUT file to use instead of --target's shipped table")
    r.add_argument("--target-latency", type=float, required=True, help="T, in the latency model's unit")
    r.add_argument("--algo", choices=ALGOS, default=d.algo)
    r.add_argument("--grad-mode", choices=GRAD_MODES, default=d.grad_mode)
    r.add_argument("--loss", choices=LOSSES, default=d.loss)
    r.add_argument("--reg-scale", type=float, default=d.reg_scale, help="mul#log: scale (authors' alpha)")
    r.add_argument("--reg-beta", type=float, default=d.reg_beta, help="mul#log: exponent beta")
    r.add_argument("--ratio-beta", type=float, default=d.ratio_beta, help="mul#ratio: exponent up to T")
    r.add_argument("--ratio-beta-over", type=float, default=d.ratio_beta_over, help="mul#ratio: exponent beyond T")
    r.add_argument("--reg-lambda", type=float, default=d.reg_lambda, help="add#linear, add#hinge: lambda")
    r.add_argument("--rl-samples", type=int, default=d.rl_samples, help="REINFORCE: nets sampled per alpha step")
    r.add_argument("--rl-tradeoff", type=float, default=d.rl_tradeoff, help="REINFORCE: w in acc*(T/LAT)^w")
    r.add_argument("--rl-baseline-decay", type=float, default=d.rl_baseline_decay)
    r.add_argument("--epochs", type=int, default=d.epochs, help="search epochs (after the warm-up)")
    r.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs, help="ignored with --init-from")
    r.add_argument("--init-from", default=None, help="a finished warm-up's checkpoint.pt (skips the warm-up)")
    r.add_argument("--lr", type=float, default=d.lr, help="weights: cosine from this over the search epochs")
    r.add_argument("--arch-lr", type=float, default=d.arch_lr, help="Adam lr of alpha (betas 0, 0.999)")
    r.add_argument("--arch-every", type=int, default=d.arch_every, help="one alpha step every N weight steps")
    r.add_argument(
        "--arch-skip-epochs", type=int, default=d.arch_skip_epochs, help="first search epochs without alpha steps"
    )
    r.add_argument("--val-batch-size", type=int, default=d.val_batch_size, help="batch of an alpha step")
    r.add_argument("--alpha-init-std", type=float, default=d.alpha_init_std, help="alpha ~ N(0, std) (paper: 1e-3)")
    r.set_defaults(func=_cmd_run)
    add_compare_parser(subparsers)


def config_from_args(args: argparse.Namespace, **overrides: Any) -> SearchConfig:
    names = {f.name for f in fields(SearchConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return SearchConfig(**{**values, **overrides})


def _execute(cfg: SearchConfig) -> int:
    search = Search(cfg)
    try:
        result = search.run()
    finally:
        search.close()
        D.cleanup()
    if search.main:
        print(json.dumps(result))
    return 0


def _cmd_warmup(args: argparse.Namespace) -> int:
    return _execute(config_from_args(args, algo=None, warmup_epochs=args.epochs, epochs=0, target=None))


def _cmd_run(args: argparse.Namespace) -> int:
    overrides = {"warmup_epochs": 0} if args.init_from else {}
    return _execute(config_from_args(args, **overrides))
