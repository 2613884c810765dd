"""FSDP for a model whose training state does not fit a GPU under DDP (`models.<name>.parallel`),
and its checkpoints: every process writes its shards, then rank 0 the file that names them, so
that a kill at any moment leaves a complete checkpoint (docs/design.md, "On a cluster"). FSDP
and DCP take seconds to import, so they are imported where they are used: a DDP or
single-process run (every CPU run) never pays for them."""

from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vocabscale.train.checkpoint import UnreadableState, read_state, save_state
from vocabscale.train.distributed import Process
from vocabscale.train.model import Llama

log = logging.getLogger(__name__)

#: The key of a checkpoint file that names its directory of shards.
SHARDS = "shards"


def shard(model: Llama, proc: Process) -> None:
    """FSDP2 over every process: each block a unit of its own, the root holding the rest (the
    embedding, the final norm and the output head, whose weight the fused loss head reads
    directly). Parameters are replaced by sharded ones: build the optimizer after this."""
    from torch.distributed.device_mesh import init_device_mesh  # seconds: only under FSDP
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(proc.device.type, (proc.world,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` for sharded gradients too: the norm over every shard, as a plain
    tensor."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if hasattr(norm, "full_tensor"):  # a DTensor (sharded gradients), without importing it
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


def save(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    proc: Process,
) -> None:
    """Every process writes its shards of the weights and the optimizer into a new
    directory; then rank 0 writes `meta` naming it to `path` and removes the one it named
    before. Collective: returns on every process once `path` is complete."""
    import torch.distributed.checkpoint as dcp  # seconds to import: only where FSDP saves
    from torch.distributed.checkpoint.state_dict import get_state_dict

    shards = [f"{path.stem}.{secrets.token_hex(4)}.dcp"]
    dist.broadcast_object_list(shards, src=0)  # rank 0's name
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.save(state, checkpoint_id=path.parent / shards[0])
    if proc.main:
        previous = named_or_kept(path)
        save_state(path, {**meta, SHARDS: shards[0]})
        if previous not in (None, shards[0]):
            shutil.rmtree(path.parent / previous, ignore_errors=True)
    dist.barrier()


def load(
    meta: dict[str, Any], directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Load the weights and optimizer state of the checkpoint file `meta` (read from
    `directory`) into the sharded model and optimizer: each process reads its own shards. DCP
    reshards on loading, so another number of processes (two or more) may resume it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=directory / meta[SHARDS])
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights, gathered on rank 0's CPU (the other ranks get nothing), under
    the names of the plain model's `state_dict`. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def named_shards(path: Path) -> str | None:
    """The directory of shards the checkpoint file `path` names; None when there is no file
    (or it names none). UnreadableState when it cannot be read."""
    meta = read_state(path, mmap=False)
    return meta.get(SHARDS) if meta else None


def named_or_kept(path: Path) -> str | None:
    """`named_shards` of a checkpoint file of this run that is about to be replaced or
    removed (its state is saved anew, or its branch is done): when it cannot be read, None,
    with a warning, so that its shards are kept (the next start removes them as unnamed)."""
    try:
        return named_shards(path)
    except UnreadableState as error:
        log.warning("%s cannot be read (%s): the shards it names are kept", path, error.cause)
        return None


def remove(path: Path) -> None:
    """Remove a checkpoint file and the shards it names."""
    named = named_or_kept(path)
    path.unlink(missing_ok=True)
    if named:
        shutil.rmtree(path.parent / named, ignore_errors=True)


def remove_unnamed(checkpoint_dir: Path, files: list[Path]) -> None:
    """Remove the directories of shards that none of the checkpoint `files` names: those of
    a save that a kill cut short. When one of `files` cannot be read, none: they may be the
    shards it names (reading it again stops the run with the error)."""
    named: set[str | None] = set()
    for path in files:
        try:
            named.add(named_shards(path))
        except UnreadableState as error:
            log.warning("%s cannot be read (%s): no shards are removed", path, error.cause)
            return
    for directory in checkpoint_dir.glob("*.dcp"):
        if directory.name not in named:
            shutil.rmtree(directory, ignore_errors=True)
