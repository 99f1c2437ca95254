"""Distributed data parallel (torchrun) facts and collectives for the trainer; a single
process when torchrun's environment variables are absent."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


class DistContext:
    """Process-group facts from torchrun's RANK / WORLD_SIZE / LOCAL_RANK (single process if absent):
    ``world``, ``rank``, ``device``, ``main`` (rank 0), and the few collectives the trainer uses."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owns_group = False
        cuda = torch.cuda.is_available()
        if self.world > 1:
            if cuda:
                torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank) if cuda else torch.device("cpu")
            if not dist.is_initialized():
                dist.init_process_group("nccl" if cuda else "gloo")
                self.owns_group = True
        else:
            self.device = torch.device("cuda" if cuda else "cpu")
        self.main = self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t

    def gather_objects(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self):
        if self.owns_group:
            dist.destroy_process_group()
