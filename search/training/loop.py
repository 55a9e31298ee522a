"""What every resumable training here shares: the epoch loop, its stops, its checkpoints and its logs.

``EpochLoop`` is the base of ``search.training.train.Trainer`` (one network) and ``search.elastic.train.ElasticTrainer``
(a supernet). It runs epochs from the loader's position to ``config.epochs``; stops checkpointed after
``--stop-after-steps``, past ``--time-limit`` or on SIGTERM (a scheduler's preemption, a session's end, ``kill``),
with every rank stopping at the same step; writes ``checkpoint.pt`` with its sha256 beside it and refuses, in one
line, a checkpoint that is corrupt, of another kind, or of a run whose ``RESUME_KEYS`` settings differ; and keeps
``log.csv``, ``log.json`` and TensorBoard logs of the epoch rows. Subclasses provide the step, the epoch's end,
the checkpoint's content and the final result.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm import tqdm

from search.training import distributed as dist
from zoo.files import atomic_write, verify_checksum, write_checksummed

CHECKPOINT = "checkpoint.pt"


class TrainError(ValueError):
    """A training configuration that cannot run, or a checkpoint that does not fit it."""


class EpochLoop:
    """Subclasses set ``FORMAT``, ``RESUME_KEYS`` and, in ``__init__``: ``config`` (a dataclass with ``out``,
    ``resume``, ``epochs``, ``progress``, ``checkpoint_minutes``, ``stop_after_steps``, ``time_limit_minutes``),
    ``out``, ``main``, ``world``, ``device``, ``history``, ``step`` and ``loader`` (the training loader, whose
    position is the run's)."""

    FORMAT: ClassVar[str]
    RESUME_KEYS: ClassVar[tuple[str, ...]]
    config: Any
    out: Path
    main: bool
    world: int
    device: torch.device
    history: list[dict[str, Any]]
    step: int
    loader: Any
    terminated = False
    train_seconds = 0.0

    # ------------------------------------------------------------ what subclasses provide

    def _checkpoint(self) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, ck: dict[str, Any], path: Path) -> None:
        raise NotImplementedError

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step on a batch (``self.step`` counts it afterwards)."""
        raise NotImplementedError

    def _train_mode(self) -> None:
        raise NotImplementedError

    def _postfix(self) -> dict[str, str]:
        """What the progress bar shows beside the step count (asked every 50 steps: it may synchronize)."""
        return {}

    def _end_epoch(self, epoch: int, tb: Any) -> Any:
        raise NotImplementedError

    def _finish(self) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> None:
        if self.main:
            ck = {"format": self.FORMAT, "config": asdict(self.config), **self._checkpoint()}
            write_checksummed(self.out / CHECKPOINT, lambda f: torch.save(ck, f))

    def load_checkpoint(self, path: Path) -> None:
        verify_checksum(path)
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: one line saying which (torch's can run to many)
            first = (str(e).splitlines() or [""])[0]
            raise TrainError(f"cannot read checkpoint {path}: {type(e).__name__}: {first}") from None
        if not isinstance(ck, dict) or ck.get("format") != self.FORMAT:
            raise TrainError(f"{path}: not a {self.FORMAT} checkpoint")
        now = asdict(self.config)
        # a setting added after the checkpoint was written: the run had its default
        then = {f.name: f.default for f in fields(self.config)} | ck["config"]
        changed = [k for k in self.RESUME_KEYS if then.get(k) != now[k]]
        if changed:
            k = changed[0]
            raise TrainError(f"{path}: --resume with {k}={now[k]!r}, but the run used {then.get(k)!r}")
        self._restore(ck, path)

    # ------------------------------------------------------------ logs and stops

    def write_logs(self, row: dict[str, Any], tb: Any) -> None:
        if not self.main:
            return
        keys = list(dict.fromkeys(k for r in self.history for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write(self.out / "log.csv", buf.getvalue())
        atomic_write(self.out / "log.json", json.dumps({"config": asdict(self.config), "epochs": self.history}))
        for k, v in row.items():
            if k != "epoch" and isinstance(v, int | float):
                tb.add_scalar(k, v, row["epoch"])
        tb.flush()

    def stop_requested(self, started: float, steps_run: int) -> bool:
        """After ``--stop-after-steps``, past ``--time-limit``, or once SIGTERM came; all ranks at the same step."""
        c = self.config
        stop = c.stop_after_steps is not None and steps_run >= c.stop_after_steps
        over = c.time_limit_minutes is not None and time.monotonic() - started > 60 * c.time_limit_minutes
        local = self.terminated or over
        if self.world == 1:
            return stop or local
        if steps_run % 20 == 0:
            flag = torch.tensor(float(local), device=self.device)
            stop = stop or bool(dist.all_reduce_sum(flag).item() > 0)
        return stop

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.terminated = True

    # ------------------------------------------------------------ loop

    def _train_epoch(self, epoch: int, started: float, steps_run: int) -> tuple[int, bool]:
        """Train from the loader's position to the epoch's end; returns (steps run so far, stopped early)."""
        c, loader = self.config, self.loader
        self._train_mode()
        show = self.main and c.progress
        bar = tqdm(
            total=len(loader),
            initial=loader.batch,
            desc=f"epoch {epoch + 1}/{c.epochs}",
            disable=not show,
            leave=False,
            dynamic_ncols=True,
        )
        last_save = tick = time.monotonic()
        for x, y in loader:
            self.train_step(x, y)
            self.step += 1
            steps_run += 1
            bar.update(1)
            if bar.n % 50 == 0 and show:
                bar.set_postfix(self._postfix())
            now = time.monotonic()
            self.train_seconds += now - tick
            tick = now
            if self.stop_requested(started, steps_run):
                bar.close()
                return steps_run, True
            if now - last_save > 60 * c.checkpoint_minutes:
                self.save_checkpoint()
                last_save = tick = time.monotonic()
        bar.close()
        return steps_run, False

    def run(self) -> dict[str, Any]:
        """Train (resuming if asked); returns the final result, or ``{"finished": False, ...}`` after a stop.

        The process group stays up (callers run ``search.training.distributed.cleanup()``), so rank checks still work.
        """
        c = self.config
        ckpt = self.out / CHECKPOINT
        if c.resume and ckpt.is_file():
            self.load_checkpoint(ckpt)
            if self.main:
                tqdm.write(f"resumed {ckpt} at step {self.step} (epoch {self.loader.epoch + 1} of {c.epochs})")
        elif ckpt.is_file():
            raise TrainError(f"{ckpt} exists: pass --resume to continue that run, or choose another --out")
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        tb = None
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(self.out / "tb"), purge_step=len(self.history) + 1)
        started, steps_run = time.monotonic(), 0
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            while self.loader.epoch < c.epochs:
                epoch = self.loader.epoch
                steps_run, stopped = self._train_epoch(epoch, started, steps_run)
                if stopped:
                    self.save_checkpoint()
                    return {"finished": False, "epoch": epoch, "step": self.step, "checkpoint": str(ckpt)}
                self._end_epoch(epoch, tb)
                self.save_checkpoint()
            return self._finish()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if tb is not None:
                tb.close()
