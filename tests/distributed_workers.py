"""Code run by the ranks of the distributed tests (spawned processes import it by name).

Run as a script it is one rank that either fails at once (rank 1) or waits for the others
(rank 0): ``python distributed_workers.py RANK PORT DATA_PATH``.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import torch


def free_port() -> str:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return str(sock.getsockname()[1])


def rank_settings(local_rank: int, world: int, port: str) -> dict:
    """Config keys that make this process rank ``local_rank`` of ``world`` on this machine."""
    return {"local_rank": local_rank, "world_size": world, "nproc": world, "port": port, "dist_timeout": 60}


def train_and_record(local_rank: int, world: int, settings: dict, port: str, out_dir: str) -> None:
    """Train LLMSRec for one epoch without validation; save each step's losses, the last step's
    gradients, the weights and the catalogue vectors to ``out_dir/rank<r>-of-<world>.pt``."""
    torch.set_num_threads(1)
    import recbole_llmsrec  # noqa: F401  (the compatibility layer)
    from helpers import build_llmsrec
    from recbole_llmsrec.trainer import LLMSRecTrainer

    overrides = rank_settings(local_rank, world, port) if world > 1 else {}
    config, model, (train_data, _, _) = build_llmsrec(settings, **overrides)
    trainer = LLMSRecTrainer(config, model)
    losses, calculate_loss = [], model.calculate_loss

    def recorded(interaction):
        terms = calculate_loss(interaction)
        losses.append([term.item() for term in terms])
        return terms

    model.calculate_loss = recorded
    trainer.fit(train_data, None, saved=False)
    torch.save({
        "losses": torch.tensor(losses),
        "gradients": {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None},
        "weights": {name: p.detach().clone() for name, p in model.named_parameters()},
        "catalogue": model.catalogue_item_vectors(),
    }, Path(out_dir) / f"rank{local_rank}-of-{world}.pt")


def fail_or_wait(local_rank: int, port: str, data_path: str) -> None:
    """Rank 1 raises right after joining the group; rank 0 waits for it in a collective."""
    from recbole_llmsrec.config import Config
    from recbole_llmsrec.distributed import barrier

    settings = dict(rank_settings(local_rank, 2, port), data_path=data_path, dist_timeout=30)
    Config(model="SASRec", dataset="tiny", config_dict=settings)
    if local_rank == 1:
        raise RuntimeError("rank 1 failed on purpose")
    barrier()


if __name__ == "__main__":
    fail_or_wait(int(sys.argv[1]), sys.argv[2], sys.argv[3])
