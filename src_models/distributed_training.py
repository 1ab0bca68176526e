"""Training on several GPUs or machines with DistributedDataParallel, in processes started by torchrun.

`ProcessGroup.start` joins the group torchrun set up (``init_process_group("env://")`` reads
torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT): NCCL and one GPU per
local rank on CUDA, gloo on the CPU. A `Trainer` given the group wraps its network in
`DistributedDataParallel` for the training passes only (the model it keeps and saves is the
bare network), draws its patches from its own random stream (seed + rank), so ``batch_size`` is
per process and a step learns from ``batch_size x world_size`` patches, and agrees with the
other processes at every step on whether to stop (step limit, time budget, a stop request on
any of them), so that none waits for the others in a collective that never comes. The step
losses it records are the means over the processes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import pick_device
from .errors import InputError

__all__ = ["ProcessGroup", "TORCHRUN_VARIABLES"]

log = logging.getLogger(__name__)

#: What torchrun sets in the environment of each process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@dataclass
class ProcessGroup:
    """This process's place in a torchrun launch: ``rank`` of ``world_size``, its ``device``.

    Use `start` (a context manager that ends the group on the way out).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @classmethod
    def start(cls, device: str | None = "auto") -> "ProcessGroup":
        """Join the process group of a torchrun launch on ``device`` (``auto``: CUDA, else the CPU).

        Raises
        ------
        InputError
            Not started by torchrun, or a device the group cannot use (Apple MPS).
        """
        if not dist.is_torchelastic_launched():  # torch's own test of a torchrun launch
            raise InputError("Distributed training runs in processes started by torchrun "
                             "(torchrun --nproc_per_node N ...), which this one was not.")
        kind = pick_device(device).type
        if kind == "mps":
            raise InputError("Distributed training runs on CUDA GPUs or on CPUs, not on Apple MPS.",
                             setting="device")
        local_rank = dist.get_node_local_rank()  # torchrun's LOCAL_RANK, read by torch
        if kind == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise InputError(f"Process {local_rank} on this machine has no GPU of its own (there are "
                                 f"{torch.cuda.device_count()}); start at most one process per GPU.",
                                 setting="device")
            place, backend = torch.device("cuda", local_rank), "nccl"
            torch.cuda.set_device(place)
        else:
            place, backend = torch.device("cpu"), "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method="env://",
                                    **({"device_id": place} if kind == "cuda" else {}))
        group = cls(dist.get_rank(), dist.get_world_size(), local_rank, place, backend)
        log.info("Process %d of %d on %s (%s).", group.rank, group.world_size, place, backend)
        return group

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Leave the process group (every process calls it once training ended)."""
        if dist.is_initialized():
            dist.destroy_process_group()

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that reports progress and writes files."""
        return self.rank == 0

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` in `DistributedDataParallel` (it starts from rank 0's weights); buffers (batch
        norm statistics) stay each process's own until `average_buffers`."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)

    def agree(self, stop: bool, elapsed: float) -> tuple[bool, float]:
        """Whether any process wants to stop, and the longest time any has run: every process
        gets the same two answers at the same step, so they stop together and follow one
        learning-rate schedule."""
        values = torch.tensor([float(stop), float(elapsed)], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return bool(values[0].item()), float(values[1].item())

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes."""
        total = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(total)
        return float(total.item()) / self.world_size

    @torch.no_grad()
    def average_buffers(self, net: torch.nn.Module) -> None:
        """Average floating-point buffers (batch norm statistics) over the processes, so every
        process ends with the same network."""
        for buffer in net.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(self.world_size)

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")
