"""Running a test body in several gloo processes on this machine."""

import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, body, results, timeout):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)  # the ranks share the machine's cores: no oversubscription
    # every collective is bounded: a rank left waiting fails instead of hanging the test
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout))
    try:
        body(rank)
        results[rank] = "ok"
    except BaseException as e:  # report to the parent instead of hanging the other ranks
        results[rank] = f"{type(e).__name__}: {e}"
        raise
    finally:
        dist.destroy_process_group()


def run_ranks(body, world=2, timeout=60):
    """Runs body(rank) in `world` processes of one gloo group; returns {rank: 'ok' or error}.

    body must be a module-level function (it is pickled into the spawned processes); every
    collective times out after `timeout` seconds.
    """
    results = mp.Manager().dict()
    mp.spawn(_entry, args=(world, _free_port(), body, results, timeout), nprocs=world,
             join=True)
    return dict(results)


def fsdp_linears(model, world):
    """``model`` sharded with FSDP2 over a CPU mesh of ``world`` ranks: each Linear its own unit,
    then the root (call inside a rank with the process group up)."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)
