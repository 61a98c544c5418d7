"""Start one process per device: ``--num-gpus N`` (gloo on CPU, nccl on CUDA), multi-node
with ``--num-machines/--machine-rank/--dist-url``, or under ``torchrun`` (environment init).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detlab.utils.errors import UserError

__all__ = ["launch", "under_torchrun"]

logger = logging.getLogger("detlab")


def under_torchrun() -> bool:
    """True when started by torchrun/torch.distributed.run (RANK, WORLD_SIZE, LOCAL_RANK set)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _cpu_threads(procs_per_machine: int) -> None:
    if not torch.cuda.is_available() and procs_per_machine > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_per_machine))


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: tuple = (),
    timeout: timedelta = timedelta(minutes=30),
) -> Any:
    """Run ``main_func(*args)`` in every process of the job; returns its result when the
    job is a single process, else the exit status (0 = all processes succeeded)."""
    if under_torchrun():
        local = int(os.environ["LOCAL_RANK"])
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        _cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if not dist.is_initialized():
            dist.init_process_group(_backend(), init_method="env://", timeout=timeout)
        try:
            return main_func(*args)
        finally:
            dist.destroy_process_group()
    world = num_gpus_per_machine * num_machines
    if world <= 1:
        return main_func(*args)
    if dist_url == "auto":
        if num_machines != 1:
            raise UserError("--dist-url auto works on one machine; pass tcp://HOST:PORT.")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    ctx = mp.start_processes(
        _worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
        join=False,
    )
    try:
        with _forward_signals(ctx.processes):  # SIGTERM/SIGUSR1 to this process reach all ranks
            while not ctx.join():
                pass
    except mp.ProcessExitedException as err:
        return err.exit_code if err.exit_code and err.exit_code > 0 else 1
    return 0


@contextlib.contextmanager
def _forward_signals(processes: list) -> Iterator[None]:
    """Pass preemption signals on to the worker processes (they save and exit)."""
    from detlab.engine.preemption import PREEMPTION_SIGNALS

    def forward(signum: int, frame: Any) -> None:
        for p in processes:
            if p.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(p.pid, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, forward) for sig in PREEMPTION_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world: int,
    per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
) -> None:
    rank = machine_rank * per_machine + local_rank
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    _cpu_threads(per_machine)
    dist.init_process_group(
        _backend(), init_method=dist_url, world_size=world, rank=rank, timeout=timeout
    )
    from detlab.engine.nan_guard import TrainingDivergedError
    from detlab.engine.preemption import EXIT_PREEMPTED, TrainingPreempted

    try:
        main_func(*args)
    except (UserError, TrainingDivergedError, TrainingPreempted) as err:
        preempted = isinstance(err, TrainingPreempted)
        if rank == 0:
            print(f"{'stopped' if preempted else 'error'}: {err}", file=sys.stderr)
        else:
            logger.error(f"rank {rank}: {err}")
        sys.exit(EXIT_PREEMPTED if preempted else 2 if isinstance(err, UserError) else 1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
