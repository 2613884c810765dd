"""The saved states of one run in its checkpoint directory: `state.pt` (the main trajectory)
and `branch.pt` (a wsd cooldown branch in progress). Which process writes what, one file from
rank 0 or every rank's shards under FSDP, and which saved state this run may take up (its own
fingerprint, written under its own parallelism), read by every rank apart from rank 0's writes
and agreed on; the file format is `checkpoint`'s."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from vocabscale.train import distributed, sharded
from vocabscale.train.checkpoint import (
    UnreadableState,
    fingerprint,
    read_state,
    remove_stale_temporaries,
    rng_state,
    save_state,
    set_rng_state,
)
from vocabscale.train.model import Llama
from vocabscale.train.plan import RunPlan

log = logging.getLogger(__name__)


#: What a rank found at a state's path, when it is not the cause it could not read it for.
MISSING, FOUND = "missing", "found"


def agree(path: Path, outcomes: list[str]) -> None:
    """Every rank's outcome of reading `path` (MISSING, FOUND or why it could not), in rank
    order: raise UnreadableState, on every rank alike, when any rank could not read it or
    when some ranks see it and others do not (rank 0 would resume, the others start
    afresh)."""
    failed = [(rank, found) for rank, found in enumerate(outcomes) if found not in (MISSING, FOUND)]
    if failed:
        rank, cause = failed[0]
        raise UnreadableState(path, cause if len(outcomes) == 1 else f"on rank {rank}: {cause}")
    if len(set(outcomes)) > 1:
        missing = [rank for rank, found in enumerate(outcomes) if found == MISSING]
        raise UnreadableState(
            path,
            f"rank(s) {missing} do not see it: the checkpoint directory must be on a "
            "filesystem every node shares",
        )


class Checkpointer:
    """Saves and reads the training state of the run `plan`: `model`, `optimizer` and the
    random generators, with whatever the caller adds (step, records)."""

    def __init__(
        self, plan: RunPlan, model: Llama, optimizer: torch.optim.Optimizer, directory: Path
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.proc, self.sharded = plan.proc, plan.sharded
        data = plan.data
        self.fingerprint = fingerprint(
            plan.spec, data.vocab_size, plan.config, data.content_digest, plan.precision
        )
        self.directory = directory
        self.state_path = directory / "state.pt"
        self.branch_path = directory / "branch.pt"

    def training_state(self) -> dict[str, Any]:
        """What the arithmetic continues from: weights, optimizer, random generators (under
        FSDP the weights and optimizer go to the shards `save` writes)."""
        state = {"fingerprint": self.fingerprint, "rng": rng_state(self.proc.device)}
        if self.sharded:
            return state
        return {**state, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        if self.sharded:
            sharded.load(state, self.directory, self.model, self.optimizer)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], self.proc.device)

    def save(self, path: Path, state: dict[str, Any]) -> None:
        """Write `state` (with `training_state()` in it) to `path`: rank 0 alone under DDP
        (every rank holds the same weights), every rank its shards under FSDP. Collective:
        rank 0 replaces the file only once every rank is done with what it read (under DDP
        a barrier; under FSDP the collective save of the shards), so that no rank reads, or
        pages in from its memory-mapping, a file rank 0 is replacing (SIGBUS or ESTALE on
        NFS)."""
        if self.sharded:
            sharded.save(path, self.model, self.optimizer, state, self.proc)
            return
        distributed.barrier(self.proc)
        if self.proc.main:
            save_state(path, state)

    def read(self, path: Path) -> dict[str, Any] | None:
        """A saved state of this run (matching fingerprint), or None. Collective: every rank
        reads once rank 0 has finished writing (the barrier before), and all agree (`agree`),
        so that a state one rank cannot read stops every rank with UnreadableState."""
        distributed.barrier(self.proc)
        state, outcome = None, MISSING
        try:
            state = read_state(path, mmap=self.proc.device.type == "cuda")
            outcome = MISSING if state is None else FOUND
        except UnreadableState as error:
            outcome = error.cause
        agree(path, distributed.gather(outcome, self.proc))
        if state is not None and state.get("fingerprint") != self.fingerprint:
            log.warning("%s belongs to other settings or data; not resumed", path)
            return None
        if state is not None and (sharded.SHARDS in state) != self.sharded:
            written, now = ("FSDP", "DDP") if sharded.SHARDS in state else ("DDP", "FSDP")
            log.warning("%s was written under %s; this run is %s: not resumed", path, written, now)
            return None
        return state

    def remove_leftovers(self, out_dir: Path) -> None:
        """Rank 0, once the state is read (a state that cannot be read has stopped the run
        before): what a kill left half written (temporaries of atomic writes, shard
        directories no state names)."""
        remove_stale_temporaries(out_dir, self.directory)
        if self.sharded:
            sharded.remove_unnamed(self.directory, [self.state_path, self.branch_path])

    def remove_branch(self) -> None:
        """Rank 0, once a cooldown branch is evaluated: its saved progress."""
        if self.sharded:
            sharded.remove(self.branch_path)
        else:
            self.branch_path.unlink(missing_ok=True)
