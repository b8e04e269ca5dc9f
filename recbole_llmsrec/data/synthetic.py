"""An order-determined synthetic dataset: each next item is a function of the previous one.

Users walk a fixed random cycle over the catalogue from random starting points, so the
whole signal is in the sequence: a sequential model can reach a perfect score and
popularity cannot beat chance. On a pure walk the *set* of the last few items already names
the next one (it is the successor of the only item whose successor is missing), so a model
that ignores order can solve it too. With ``jump_probability`` > 0 a step jumps to a random
item instead: only the last item predicts the next, which a model that reads the history as
a set cannot find, and shuffling a history destroys the signal. The tests and
``benchmarks/chain_study.py`` use it to check that a model learns order at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TITLE_WORDS = ("Red", "Blue", "Star", "River", "Night", "City", "Iron", "Garden", "Lost", "Ocean", "Silent", "Winter")


def write_chain_dataset(
    folder: Path, n_items: int = 100, n_users: int = 120, length: int = 10, titles: bool = False,
    jump_probability: float = 0.0,
) -> None:
    """Write RecBole atomic files ``folder/chain/chain.inter`` (``user_id, item_id, timestamp``) of
    ``n_users`` users with ``length`` steps each along one fixed random cycle of ``n_items``; each step
    jumps to a uniformly random position of the cycle with ``jump_probability``.

    ``titles`` also writes ``chain.item`` with a title per item (two random words and the id).
    """
    rng = np.random.default_rng(0)
    cycle = rng.permutation(n_items) + 1
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(n_users):
        position = rng.integers(n_items)
        for step in range(length):
            lines.append(f"u{user}\ti{cycle[position]}\t{1000 * user + step}")
            jump = jump_probability > 0 and rng.random() < jump_probability
            position = rng.integers(n_items) if jump else (position + 1) % n_items
    (folder / "chain").mkdir(parents=True)
    (folder / "chain" / "chain.inter").write_text("\n".join(lines) + "\n")
    if titles:
        rows = [f"i{item}\t{rng.choice(TITLE_WORDS)} {rng.choice(TITLE_WORDS)} {item}" for item in range(1, n_items + 1)]
        (folder / "chain" / "chain.item").write_text("item_id:token\ttitle:token_seq\n" + "\n".join(rows) + "\n")
