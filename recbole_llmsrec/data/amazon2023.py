"""Amazon Reviews 2023 raw files to RecBole atomic files, the way the LLM-SRec paper filters them.

Usage::

    python -m recbole_llmsrec.data.amazon2023 \\
        --reviews Industrial_and_Scientific.jsonl.gz \\
        --meta meta_Industrial_and_Scientific.jsonl.gz \\
        --out dataset --name Industrial_and_Scientific [--kcore 5] [--user-fraction F --seed S]

writes, for RecBole with ``data_path: dataset``:

* ``dataset/NAME/NAME.inter``: ``user_id:token item_id:token rating:float timestamp:float``,
  one row per kept review, sorted by user, then time; timestamps in seconds (the files
  have milliseconds; the fraction is kept, so same-second reviews keep their order);
* ``dataset/NAME/NAME.item``: ``item_id:token title:token_seq`` (and
  ``description:token_seq`` with ``--description``), items keyed by ``parent_asin``;
* ``dataset/NAME/NAME.stats.json``: the resulting users, items and interactions, what was
  dropped on the way, and the arguments.

Steps, in order:

1. The reviews file (gzip or plain JSON Lines, told apart by its first bytes) is streamed
   once. Each line keeps only ``user_id``, ``parent_asin``, ``rating`` and ``timestamp``,
   as integer ids and numbers in flat arrays; review texts are never held.
2. A repeated (user, item) pair keeps its earliest review (equal times: the first line).
3. Iterative k-core: users and items with fewer than ``kcore`` interactions are dropped,
   again and again, until every user and item has at least ``kcore``.
4. Optional user subsampling (``user_fraction`` < 1), as the authors' script does it: it
   draws users from the already 5-core data and filters again. Here ``floor(fraction *
   users)`` users of the k-core are drawn without replacement (numpy's default generator
   seeded with ``seed``, over the users in sorted ``user_id`` order, so the draw does not
   depend on the order of the lines), then the k-core runs again. The authors' fractions
   are in :data:`PAPER_USER_FRACTIONS`.
5. The metadata file is streamed; the title (and description) of surviving items only is
   kept. Texts lose tabs, line breaks and repeated white space; an item with no metadata
   line or an empty title gets ``No Title`` (``No Description``).

Unreadable lines (bad JSON; a review without a well-typed ``user_id``, ``parent_asin``,
``rating`` or ``timestamp``; metadata without ``parent_asin``, or a review line given as
metadata) are skipped, counted and reported; more than :data:`MALFORMED_ALLOWED` of them
that are also more than :data:`MALFORMED_SHARE` of the lines read so far stop the
conversion with an error naming the first one. Nothing is written until everything has been read: each file is written
to a temporary name and renamed at the end, so a failed run leaves no partial output.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import sys
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)

REVIEW_FIELDS = ("user_id", "parent_asin", "rating", "timestamp")
"""Fields every review line must have (Amazon Reviews 2023 schema)."""
TEXT_FIELDS = ("title", "description")
"""Metadata fields the converter can write into ``NAME.item``."""
PLACEHOLDERS = {"title": "No Title", "description": "No Description"}
"""Text written for an item whose field is missing or empty."""
PAPER_USER_FRACTIONS = {
    "Movies_and_TV": 0.05,
    "Electronics": 0.05,
    "CDs_and_Vinyl": 0.33,
    "Industrial_and_Scientific": 1.0,
}
"""Share of users the authors' preprocessing keeps per category (``sample_rate`` there)."""
MALFORMED_ALLOWED = 100
"""Malformed lines always tolerated per file."""
MALFORMED_SHARE = 0.01
"""Beyond :data:`MALFORMED_ALLOWED`, the tolerated share of malformed lines among those read."""
MAX_TIMESTAMP_MS = 10**15
"""Largest accepted timestamp (milliseconds, the year 33658): anything above is not a date."""

INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
_GZIP_MAGIC = b"\x1f\x8b"
_PROGRESS_EVERY = 8192
_WRITE_CHUNK = 100_000
_CONTROL_CHARACTERS = {code: " " for code in (*range(32), 127)}


class MalformedInputError(ValueError):
    """Too many lines of an input file could not be read."""


class _MalformedLine(Exception):
    """One unreadable line; the message says why."""


class _MalformedLines:
    """Counts a file's malformed lines and stops the run when there are too many."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.count = 0
        self.first: tuple[int, str] | None = None

    def add(self, line_number: int, reason: str, lines_read: int) -> None:
        self.count += 1
        if self.first is None:
            self.first = (line_number, reason)
        if self.count > max(MALFORMED_ALLOWED, MALFORMED_SHARE * lines_read):
            first_line, first_reason = self.first
            raise MalformedInputError(
                f"{self.path}: {self.count} of the first {lines_read} lines are malformed (more than "
                f"{MALFORMED_ALLOWED} and more than {MALFORMED_SHARE:.0%}); the first is line {first_line}: "
                f"{first_reason}. Is this an Amazon Reviews 2023 {self.kind} file?"
            )

    def report(self) -> None:
        if self.first is not None:
            first_line, first_reason = self.first
            logger.warning(
                "%s: skipped %d malformed line(s); the first is line %d: %s",
                self.path, self.count, first_line, first_reason,
            )


@dataclass
class _Reviews:
    """The kept fields of every readable review line, users and items as integer ids."""

    user: np.ndarray  # int32 user id per line
    item: np.ndarray  # int32 item id per line
    time_ms: np.ndarray  # int64 timestamp in milliseconds per line
    rating: np.ndarray  # float64 rating per line
    user_names: list[str]  # user id -> user_id
    item_names: list[str]  # item id -> parent_asin
    lines: int
    malformed: int


def clean_text(text: str) -> str:
    """``text`` on one line: control characters and runs of white space become one space."""
    return " ".join(text.translate(_CONTROL_CHARACTERS).split())


def _iter_lines(path: Path, progress: bool) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines of a gzip or plain file with their 1-based line numbers; a progress bar in bytes read."""
    with open(path, "rb") as raw, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, disable=not progress
    ) as bar:
        is_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
        try:
            for line_number, line in enumerate(stream, 1):
                if line_number % _PROGRESS_EVERY == 0:
                    bar.update(raw.tell() - bar.n)
                if line.strip():
                    yield line_number, line
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise ValueError(f"{path}: the gzip data is damaged or cut short ({exc}); download the file again") from exc
        bar.update(bar.total - bar.n)


def _parse_object(line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _MalformedLine(f"not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise _MalformedLine(f"a JSON {type(record).__name__}, not an object")
    return record


def _parse_review(line: bytes) -> tuple[str, str, float, int]:
    """``(user_id, parent_asin, rating, timestamp_ms)`` of one review line."""
    record = _parse_object(line)
    for field in REVIEW_FIELDS:
        if field not in record:
            raise _MalformedLine(f"no field {field!r}")
    user, asin, rating, timestamp = (record[field] for field in REVIEW_FIELDS)
    for field, value in (("user_id", user), ("parent_asin", asin)):
        if not isinstance(value, str) or not value:
            raise _MalformedLine(f"{field} is {value!r}, not a non-empty string")
    if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not 1 <= rating <= 5:
        raise _MalformedLine(f"rating is {rating!r}, not a number from 1 to 5")
    if isinstance(timestamp, float) and timestamp.is_integer():
        timestamp = int(timestamp)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP_MS:
        raise _MalformedLine(f"timestamp is {timestamp!r}, not a time in milliseconds")
    return user, asin, float(rating), timestamp


def _read_reviews(path: Path, progress: bool) -> _Reviews:
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    user, item, time_ms, rating = array("i"), array("i"), array("q"), array("d")
    malformed = _MalformedLines(path, "reviews")
    lines = 0
    for line_number, line in _iter_lines(path, progress):
        lines += 1
        try:
            user_id, asin, stars, timestamp = _parse_review(line)
        except _MalformedLine as exc:
            malformed.add(line_number, str(exc), lines)
            continue
        user.append(users.setdefault(user_id, len(users)))
        item.append(items.setdefault(asin, len(items)))
        time_ms.append(timestamp)
        rating.append(stars)
    malformed.report()
    if not user:
        raise ValueError(f"{path}: no readable review line (of {lines})")
    return _Reviews(
        *(np.frombuffer(values, dtype=values.typecode) for values in (user, item, time_ms, rating)),
        user_names=list(users),
        item_names=list(items),
        lines=lines,
        malformed=malformed.count,
    )


def _earliest_per_pair(user: np.ndarray, item: np.ndarray, time_ms: np.ndarray) -> np.ndarray:
    """Row indices (ascending) of the earliest review of each (user, item) pair; equal times keep the first row."""
    order = np.lexsort((time_ms, item, user))  # stable: equal keys stay in row order
    pair_user, pair_item = user[order], item[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (pair_user[1:] != pair_user[:-1]) | (pair_item[1:] != pair_item[:-1])
    return np.sort(order[first])


def _kcore(user: np.ndarray, item: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The subset of ``rows`` in which every user and every item has at least ``k`` rows."""
    while True:
        row_user, row_item = user[rows], item[rows]
        keep = (np.bincount(row_user)[row_user] >= k) & (np.bincount(row_item)[row_item] >= k)
        if keep.all():
            return rows
        rows = rows[keep]


def _sorted_by_name(ids: np.ndarray, names: list[str]) -> list[int]:
    """The distinct ``ids``, ordered by their names."""
    return sorted(np.unique(ids).tolist(), key=names.__getitem__)


def _sample_users(
    user: np.ndarray, user_names: list[str], rows: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, int]:
    """The rows of ``floor(fraction * users)`` users drawn from those of ``rows``, and that number."""
    candidates = np.array(_sorted_by_name(user[rows], user_names), dtype=np.int64)
    count = math.floor(fraction * len(candidates))
    drawn = np.random.default_rng(seed).choice(len(candidates), size=count, replace=False)
    chosen = np.zeros(len(user_names), dtype=bool)
    chosen[candidates[drawn]] = True
    return rows[chosen[user[rows]]], count


def _rank(ids: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each id's position among the distinct ids sorted by name, and those names."""
    present = _sorted_by_name(ids, names)
    position = np.zeros(len(names), dtype=np.int64)
    position[present] = np.arange(len(present))
    return position[ids], [names[i] for i in present]


def _item_text(value: Any) -> str | None:
    """Cleaned text of a metadata field: a string, or a list's first non-empty string (description paragraphs)."""
    for candidate in value if isinstance(value, list) else [value]:
        if isinstance(candidate, str) and (text := clean_text(candidate)):
            return text
    return None


def _read_item_texts(
    path: Path, asins: list[str], fields: Sequence[str], progress: bool
) -> tuple[dict[str, list[str | None]], dict[str, int]]:
    """``fields`` of the items ``asins`` (``None`` where missing or empty), and line counts."""
    position = {asin: index for index, asin in enumerate(asins)}
    texts: dict[str, list[str | None]] = {field: [None] * len(asins) for field in fields}
    found = np.zeros(len(asins), dtype=bool)
    malformed = _MalformedLines(path, "metadata")
    lines = 0
    for line_number, line in _iter_lines(path, progress):
        lines += 1
        try:
            record = _parse_object(line)
            asin = record.get("parent_asin")
            if not isinstance(asin, str) or not asin:
                raise _MalformedLine(f"parent_asin is {asin!r}, not a non-empty string")
            if "user_id" in record:  # its "title" is the review's headline, not the item's
                raise _MalformedLine("a review (it has a user_id), not item metadata")
        except _MalformedLine as exc:
            malformed.add(line_number, str(exc), lines)
            continue
        index = position.get(asin)
        if index is None:
            continue
        found[index] = True
        for field in fields:
            if texts[field][index] is None:
                texts[field][index] = _item_text(record.get(field))
    malformed.report()
    return texts, {"lines": lines, "malformed": malformed.count, "items_without_meta": int((~found).sum())}


def _tsv_field(text: str) -> str:
    """``text`` as one field of a tab-separated atomic file, quoted so that pandas reads it back unchanged."""
    if any(character in text for character in '"\t\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _write_files(directory: Path, writers: dict[str, Callable[[TextIO], None]]) -> None:
    """Write each file under a temporary name, then rename them all; a failure leaves none behind."""
    directory.mkdir(parents=True, exist_ok=True)
    temporary: dict[str, Path] = {}
    try:
        for filename, write in writers.items():
            temporary[filename] = directory / f".{filename}.tmp"
            with open(temporary[filename], "w", encoding="utf-8", newline="\n") as handle:
                write(handle)
        for filename, path in temporary.items():
            os.replace(path, directory / filename)
    finally:
        for path in temporary.values():
            path.unlink(missing_ok=True)


def _check_arguments(reviews: Path, meta: Path, name: str, kcore: int, user_fraction: float) -> None:
    for kind, path in (("reviews", reviews), ("meta", meta)):
        if not path.is_file():
            raise FileNotFoundError(f"{kind} file not found: {path}")
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"name must be a plain folder name (it names DIR/NAME/NAME.inter), got {name!r}")
    if kcore < 1:
        raise ValueError(f"kcore must be at least 1, got {kcore}")
    if not 0 < user_fraction <= 1:
        raise ValueError(f"user_fraction must be in (0, 1], got {user_fraction}")


def convert(
    reviews: str | os.PathLike,
    meta: str | os.PathLike,
    out: str | os.PathLike,
    name: str,
    kcore: int = 5,
    user_fraction: float = 1.0,
    seed: int = 0,
    description: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert one Amazon Reviews 2023 category to ``out/name/name.{inter,item,stats.json}``.

    Args:
        reviews: the category's review file (``.jsonl`` or ``.jsonl.gz``).
        meta: the category's metadata file (``meta_*.jsonl`` or ``.jsonl.gz``).
        out: the RecBole ``data_path``; the files go to ``out/name/``.
        name: the RecBole dataset name.
        kcore: minimum interactions per user and per item (iterative k-core).
        user_fraction: share of the k-core's users to keep (then k-core again); 1 keeps all.
        seed: seed of the user draw.
        description: also write ``description:token_seq`` (the first description paragraph).
        progress: show progress bars.

    Returns:
        The statistics also written to ``name.stats.json``.

    Raises:
        FileNotFoundError: an input file is missing.
        MalformedInputError: too many lines of an input file are unreadable.
        ValueError: a bad argument, damaged gzip data, or no interaction left after filtering.
    """
    reviews, meta, out = Path(reviews), Path(meta), Path(out)
    _check_arguments(reviews, meta, name, kcore, user_fraction)
    fields = list(TEXT_FIELDS) if description else ["title"]

    data = _read_reviews(reviews, progress)
    rows = _earliest_per_pair(data.user, data.item, data.time_ms)
    unique_pairs = len(rows)
    rows = _kcore(data.user, data.item, rows, kcore)
    sampled_users = None
    if user_fraction < 1:
        rows, sampled_users = _sample_users(data.user, data.user_names, rows, user_fraction, seed)
        rows = _kcore(data.user, data.item, rows, kcore)
    if len(rows) == 0:
        raise ValueError(
            f"no interaction is left after the {kcore}-core"
            + (f" of the {sampled_users} sampled users" if sampled_users is not None else "")
            + "; lower kcore or raise user_fraction"
        )

    user_rank, user_ids = _rank(data.user[rows], data.user_names)
    item_rank, asins = _rank(data.item[rows], data.item_names)
    time_ms, rating = data.time_ms[rows], data.rating[rows]
    order = np.lexsort((item_rank, time_ms, user_rank))
    user_rank, item_rank, time_ms, rating = user_rank[order], item_rank[order], time_ms[order], rating[order]

    texts, meta_counts = _read_item_texts(meta, asins, fields, progress)
    placeholders = {field: sum(text is None for text in texts[field]) for field in fields}
    item_tokens = [_tsv_field(asin) for asin in asins]

    stats: dict[str, Any] = {
        "name": name,
        "users": len(user_ids),
        "items": len(asins),
        "interactions": len(rows),
        "reviews": {
            "path": str(reviews),
            "lines": data.lines,
            "malformed": data.malformed,
            "duplicates_dropped": len(data.user) - unique_pairs,
            "users": len(data.user_names),
            "items": len(data.item_names),
        },
        "meta": {"path": str(meta), **meta_counts, "placeholders": placeholders},
        "filtering": {"kcore": kcore, "user_fraction": user_fraction, "seed": seed, "sampled_users": sampled_users},
        "item_fields": fields,
    }

    def write_inter(handle: TextIO) -> None:
        user_tokens = [_tsv_field(user_id) for user_id in user_ids]
        handle.write("\t".join(INTER_HEADER) + "\n")
        for start in range(0, len(order), _WRITE_CHUNK):
            part = slice(start, start + _WRITE_CHUNK)
            handle.writelines(
                f"{user_tokens[u]}\t{item_tokens[i]}\t{r!r}\t{t / 1000!r}\n"
                for u, i, r, t in zip(
                    user_rank[part].tolist(), item_rank[part].tolist(), rating[part].tolist(), time_ms[part].tolist()
                )
            )

    def write_item(handle: TextIO) -> None:
        handle.write("\t".join(["item_id:token", *(f"{field}:token_seq" for field in fields)]) + "\n")
        for index, token in enumerate(item_tokens):
            values = (_tsv_field(texts[field][index] or PLACEHOLDERS[field]) for field in fields)
            handle.write("\t".join([token, *values]) + "\n")

    def write_stats(handle: TextIO) -> None:
        json.dump(stats, handle, indent=2)
        handle.write("\n")

    _write_files(
        out / name,
        {f"{name}.inter": write_inter, f"{name}.item": write_item, f"{name}.stats.json": write_stats},
    )
    return stats


def _parser() -> argparse.ArgumentParser:
    fractions = ", ".join(f"{category} {fraction:g}" for category, fraction in PAPER_USER_FRACTIONS.items())
    parser = argparse.ArgumentParser(
        prog="python -m recbole_llmsrec.data.amazon2023",
        description="Convert an Amazon Reviews 2023 category (raw reviews + metadata, .jsonl or .jsonl.gz) "
        "to RecBole atomic files DIR/NAME/NAME.inter and NAME.item.",
    )
    parser.add_argument("--reviews", required=True, help="review file, e.g. Movies_and_TV.jsonl.gz")
    parser.add_argument("--meta", required=True, help="metadata file, e.g. meta_Movies_and_TV.jsonl.gz")
    parser.add_argument("--out", required=True, help="output folder (RecBole's data_path)")
    parser.add_argument("--name", required=True, help="dataset name (RecBole's dataset)")
    parser.add_argument("--kcore", type=int, default=5, help="minimum interactions per user and item (default 5)")
    parser.add_argument(
        "--user-fraction", type=float, default=1.0,
        help=f"share of the k-core's users to keep, then k-core again (default 1; the paper: {fractions})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the user draw (default 0)")
    parser.add_argument("--description", action="store_true", help="also write description:token_seq")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s")
    try:
        stats = convert(
            args.reviews, args.meta, args.out, args.name, kcore=args.kcore, user_fraction=args.user_fraction,
            seed=args.seed, description=args.description, progress=not args.no_progress,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    folder = Path(args.out) / args.name
    print(f"users: {stats['users']}")
    print(f"items: {stats['items']}")
    print(f"interactions: {stats['interactions']}")
    print(f"written: {folder / (args.name + '.inter')}, {folder / (args.name + '.item')}, "
          f"{folder / (args.name + '.stats.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
