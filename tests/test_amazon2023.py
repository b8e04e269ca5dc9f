"""Tests of the Amazon Reviews 2023 converter (``recbole_llmsrec.data.amazon2023``).

``fixtures/amazon2023/`` holds 56 review lines and 10 metadata lines in the real schema.
Six users (AUSER01-06) each review five of six items (B0CORE0001-6, user j skips item j),
which is the 5-core. Around it, each trap is built to catch one mistake:

* ADUPES09 has 5 lines but 3 distinct items: duplicates must not count towards k.
* B0DUPITEM1 has 5 lines but 4 distinct users (AUSER01 twice): likewise.
* AWEAK07 has 4 items, one of them B0CASCADE1, which has 5 users with AWEAK07. Only once
  AWEAK07 is dropped does B0CASCADE1 fall to 4: an item below k only after users are filtered.
* AVRARE08 has 5 items, one of them B0RARE0001 (only AVRARE08). Only once B0RARE0001 is
  dropped does AVRARE08 fall to 4: a user below k only after items are filtered.
* AUSER01 reviews B0CORE0002 a second time, 5 days later, on the first line: the earliest
  review (rating 4.0) must win, not the first line (rating 1.0).
* AUSER02 reviews B0CORE0003 twice at the same millisecond: the first line (3.0) wins.
* AUSER03 reviewed B0CORE0005 through the variant asin B0CORE0005V: items are parent_asin.
* AUSER03's times have 500 ms: the output keeps them (1603000000.5 seconds).
* Line 18 of the reviews is cut short; line 5 of the metadata is a JSON list.
* Titles: B0CORE0002 has a tab, a newline and double spaces; B0CORE0003 an empty title;
  B0CORE0004 double quotes; B0CORE0005 a null title; B0CORE0006 no metadata line at all;
  B0CORE0001 a second metadata line whose title must not replace the first.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

torch.set_num_threads(1)

import recbole_llmsrec  # noqa: E402,F401  (applies the RecBole compatibility layer)
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from recbole_llmsrec.config import Config  # noqa: E402
from recbole_llmsrec.data.amazon2023 import PAPER_USER_FRACTIONS, MalformedInputError, convert, main  # noqa: E402
from recbole_llmsrec.utils import get_model, get_trainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "amazon2023"
REVIEWS = FIXTURE / "reviews.jsonl"
META = FIXTURE / "meta.jsonl"
NAME = "Industrial_and_Scientific"
OUTPUT_FILES = [f"{NAME}.inter", f"{NAME}.item", f"{NAME}.stats.json"]

EXPECTED_INTER = """\
user_id:token	item_id:token	rating:float	timestamp:float
AUSER01	B0CORE0002	4.0	1601000000.0
AUSER01	B0CORE0003	5.0	1601086400.0
AUSER01	B0CORE0004	1.0	1601172800.0
AUSER01	B0CORE0005	2.0	1601259200.0
AUSER01	B0CORE0006	3.0	1601345600.0
AUSER02	B0CORE0006	4.0	1602000000.0
AUSER02	B0CORE0005	3.0	1602086400.0
AUSER02	B0CORE0004	2.0	1602172800.0
AUSER02	B0CORE0003	3.0	1602259200.0
AUSER02	B0CORE0001	4.0	1602345600.0
AUSER03	B0CORE0001	5.0	1603000000.5
AUSER03	B0CORE0002	1.0	1603086400.5
AUSER03	B0CORE0004	3.0	1603172800.5
AUSER03	B0CORE0005	4.0	1603259200.5
AUSER03	B0CORE0006	5.0	1603345600.5
AUSER04	B0CORE0006	1.0	1604000000.0
AUSER04	B0CORE0005	5.0	1604086400.0
AUSER04	B0CORE0003	3.0	1604172800.0
AUSER04	B0CORE0002	2.0	1604259200.0
AUSER04	B0CORE0001	1.0	1604345600.0
AUSER05	B0CORE0001	2.0	1605000000.0
AUSER05	B0CORE0002	3.0	1605086400.0
AUSER05	B0CORE0003	4.0	1605172800.0
AUSER05	B0CORE0004	5.0	1605259200.0
AUSER05	B0CORE0006	2.0	1605345600.0
AUSER06	B0CORE0005	2.0	1606000000.0
AUSER06	B0CORE0004	1.0	1606086400.0
AUSER06	B0CORE0003	5.0	1606172800.0
AUSER06	B0CORE0002	4.0	1606259200.0
AUSER06	B0CORE0001	3.0	1606345600.0
"""

EXPECTED_ITEM = """\
item_id:token	title:token_seq
B0CORE0001	Fluke 117 Electrician\u2019s True RMS Multimeter \u2013 Auto-Ranging
B0CORE0002	Lab Safety Goggles (2-Pack)
B0CORE0003	No Title
B0CORE0004	\"\"\"Schedule 40\"\" PVC Pipe, 3/4\"\" x 10 ft\"
B0CORE0005	No Title
B0CORE0006	No Title
"""

EXPECTED_DESCRIPTIONS = [
    "Measures AC/DC voltage.",  # first non-empty paragraph
    "No Description",  # empty list
    "Glass beakers.",
    "Sold by the foot.",  # a tab inside
    "No Description",
    "No Description",  # no metadata line
]


def output(out: Path, suffix: str, name: str = NAME) -> str:
    return (out / name / f"{name}{suffix}").read_text(encoding="utf-8")


def gzip_copy(source: Path, target: Path) -> Path:
    target.write_bytes(gzip.compress(source.read_bytes()))
    return target


def review_line(user: str, asin: str, timestamp_ms: int, rating: float = 5.0) -> str:
    return json.dumps({
        "rating": rating, "title": "Fine", "text": "Long review text.", "images": [], "asin": asin,
        "parent_asin": asin, "user_id": user, "timestamp": timestamp_ms, "helpful_vote": 0,
        "verified_purchase": True,
    }) + "\n"


def meta_line(asin: str, title: str) -> str:
    return json.dumps({"main_category": "Industrial & Scientific", "title": title, "description": [],
                       "features": [], "store": "Acme", "details": {}, "parent_asin": asin}) + "\n"


def write_synthetic(directory: Path, pairs: list[tuple[str, str, int]]) -> tuple[Path, Path]:
    """A reviews and a metadata file for (user, item, time in ms) triples."""
    reviews = directory / "reviews.jsonl"
    meta = directory / "meta.jsonl"
    reviews.write_text("".join(review_line(user, item, t) for user, item, t in pairs))
    meta.write_text("".join(meta_line(item, f"Item {item}") for item in sorted({item for _, item, _ in pairs})))
    return reviews, meta


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("converted")
    return out, convert(REVIEWS, META, out, NAME, progress=False)


def test_fixture_output_is_exact(converted: tuple[Path, dict]) -> None:
    out, stats = converted
    assert output(out, ".inter") == EXPECTED_INTER
    assert output(out, ".item") == EXPECTED_ITEM
    assert sorted(p.name for p in (out / NAME).iterdir()) == OUTPUT_FILES
    assert json.loads(output(out, ".stats.json")) == stats
    assert stats == {
        "name": NAME,
        "users": 6,
        "items": 6,
        "interactions": 30,
        "reviews": {"path": str(REVIEWS), "lines": 56, "malformed": 1, "duplicates_dropped": 5, "users": 9, "items": 9},
        "meta": {"path": str(META), "lines": 10, "malformed": 1, "items_without_meta": 1, "placeholders": {"title": 3}},
        "filtering": {"kcore": 5, "user_fraction": 1.0, "seed": 0, "sampled_users": None},
        "item_fields": ["title"],
    }


def test_kcore_is_iterative_and_counts_distinct_pairs(tmp_path: Path) -> None:
    # With k=4 nothing cascades: AWEAK07 (4 items) and B0DUPITEM1 (4 users) stay, and so do
    # AVRARE08 (C1-C4) and B0CASCADE1 (5 users); only ADUPES09 (3) and B0RARE0001 (1) go.
    stats = convert(REVIEWS, META, tmp_path, NAME, kcore=4, progress=False)
    assert (stats["users"], stats["items"], stats["interactions"]) == (8, 8, 46)
    rows = [line.split("\t") for line in output(tmp_path, ".inter").splitlines()[1:]]
    assert {row[0] for row in rows} == {f"AUSER0{j}" for j in range(1, 7)} | {"AWEAK07", "AVRARE08"}
    assert {row[1] for row in rows} == {f"B0CORE000{i}" for i in range(1, 7)} | {"B0CASCADE1", "B0DUPITEM1"}
    assert [row[1] for row in rows if row[0] == "AVRARE08"] == [f"B0CORE000{i}" for i in range(1, 5)]
    # kcore=1 keeps every distinct pair: 55 readable lines - 5 duplicates
    assert convert(REVIEWS, META, tmp_path / "k1", NAME, kcore=1, progress=False)["interactions"] == 50


def test_gzip_input_gives_the_same_files(tmp_path: Path, converted: tuple[Path, dict]) -> None:
    out, _ = converted
    reviews = gzip_copy(REVIEWS, tmp_path / "Industrial_and_Scientific.jsonl.gz")
    meta = gzip_copy(META, tmp_path / "meta_Industrial_and_Scientific.jsonl.gz")
    stats = convert(reviews, meta, tmp_path / "out", NAME, progress=False)
    assert output(tmp_path / "out", ".inter") == output(out, ".inter")
    assert output(tmp_path / "out", ".item") == output(out, ".item")
    assert (stats["users"], stats["items"], stats["interactions"]) == (6, 6, 30)
    assert (stats["reviews"]["malformed"], stats["meta"]["malformed"]) == (1, 1)


def test_malformed_lines_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        convert(REVIEWS, META, tmp_path, NAME, progress=False)
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"{REVIEWS}: skipped 1 malformed line(s); the first is line 18: not valid JSON" in m for m in messages)
    assert any(f"{META}: skipped 1 malformed line(s); the first is line 5: a JSON list, not an object" in m
               for m in messages)


def test_description_field(tmp_path: Path) -> None:
    stats = convert(REVIEWS, META, tmp_path, NAME, description=True, progress=False)
    lines = output(tmp_path, ".item").splitlines()
    assert lines[0] == "item_id:token\ttitle:token_seq\tdescription:token_seq"
    assert [line.split("\t")[2] for line in lines[1:]] == EXPECTED_DESCRIPTIONS
    assert ["\t".join(line.split("\t")[:2]) for line in lines] == EXPECTED_ITEM.splitlines()
    assert stats["meta"]["placeholders"] == {"title": 3, "description": 3}


def test_too_many_malformed_lines_stop_the_run(tmp_path: Path) -> None:
    good = "".join(review_line(f"U{n}", f"I{n}", 1_600_000_000_000) for n in range(10))
    old_schema = json.dumps({"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1600000000}) + "\n"
    meta = tmp_path / "meta.jsonl"
    meta.write_text(meta_line("I0", "Item"))

    tolerated = tmp_path / "tolerated.jsonl"
    tolerated.write_text(good + old_schema * 100)
    stats = convert(tolerated, meta, tmp_path / "out", NAME, kcore=1, progress=False)
    assert (stats["reviews"]["lines"], stats["reviews"]["malformed"], stats["interactions"]) == (110, 100, 10)

    # Beyond 100, 1% of the lines read is tolerated: 150 bad lines after 20,000 good ones pass.
    many = tmp_path / "many.jsonl"
    many.write_text(review_line("U", "I", 1_600_000_000_000) * 20_000 + old_schema * 150)
    assert convert(many, meta, tmp_path / "many", NAME, kcore=1, progress=False)["reviews"]["malformed"] == 150

    too_many = tmp_path / "too_many.jsonl"
    too_many.write_text(good + old_schema * 101)
    with pytest.raises(MalformedInputError) as error:
        convert(too_many, meta, tmp_path / "failed", NAME, kcore=1, progress=False)
    assert str(error.value) == (
        f"{too_many}: 101 of the first 111 lines are malformed (more than 100 and more than 1%); "
        "the first is line 11: no field 'user_id'. Is this an Amazon Reviews 2023 reviews file?"
    )
    assert not (tmp_path / "failed").exists()


def test_each_kind_of_bad_review_line_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = json.loads(review_line("U1", "I1", 1_600_000_000_000))
    bad = [{**good, "rating": 0}, {**good, "rating": "5"}, {**good, "rating": True}, {**good, "timestamp": -1},
           {**good, "timestamp": 1.5}, {**good, "user_id": ""}, {**good, "parent_asin": None},
           {key: value for key, value in good.items() if key != "timestamp"}]
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text(json.dumps(good) + "\n\n" + "".join(json.dumps(record) + "\n" for record in bad) + "[1]\n")
    meta = tmp_path / "meta.jsonl"
    meta.write_text(meta_line("I1", "Item"))
    with caplog.at_level("WARNING"):
        stats = convert(reviews, meta, tmp_path / "out", NAME, kcore=1, progress=False)
    assert (stats["reviews"]["lines"], stats["reviews"]["malformed"], stats["interactions"]) == (10, 9, 1)
    # line 2 is blank: skipped, not counted
    assert f"{reviews}: skipped 9 malformed line(s); the first is line 3: rating is 0, not a number from 1 to 5" in (
        caplog.text)


def test_reviews_given_as_metadata_are_refused(tmp_path: Path) -> None:
    reviews, _ = write_synthetic(tmp_path, [(f"U{n}", f"I{n % 3}", 1_600_000_000_000) for n in range(150)])
    with pytest.raises(MalformedInputError, match="the first is line 1: a review [(]it has a user_id[)], not item"):
        convert(reviews, reviews, tmp_path / "out", NAME, kcore=1, progress=False)


def test_failed_run_leaves_earlier_output_untouched(tmp_path: Path, converted: tuple[Path, dict]) -> None:
    out, _ = converted
    convert(REVIEWS, META, tmp_path, NAME, progress=False)
    bad_meta = tmp_path / "bad_meta.jsonl"
    bad_meta.write_text("not json\n" * 101)
    with pytest.raises(MalformedInputError, match=r"line 1: not valid JSON .* Amazon Reviews 2023 metadata file"):
        convert(REVIEWS, bad_meta, tmp_path, NAME, kcore=1, progress=False)
    assert output(tmp_path, ".inter") == output(out, ".inter")
    assert output(tmp_path, ".item") == output(out, ".item")
    assert sorted(p.name for p in (tmp_path / NAME).iterdir()) == OUTPUT_FILES


def test_damaged_gzip_is_an_error(tmp_path: Path) -> None:
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(REVIEWS.read_bytes())[:-30])
    with pytest.raises(ValueError, match=re.escape(f"{cut}: the gzip data is damaged or cut short")):
        convert(cut, META, tmp_path / "out", NAME, progress=False)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(f"meta file not found: {tmp_path / 'missing.jsonl'}")):
        convert(REVIEWS, tmp_path / "missing.jsonl", tmp_path, NAME)
    with pytest.raises(ValueError, match=r"user_fraction must be in \(0, 1\], got 0"):
        convert(REVIEWS, META, tmp_path, NAME, user_fraction=0)
    with pytest.raises(ValueError, match="kcore must be at least 1, got 0"):
        convert(REVIEWS, META, tmp_path, NAME, kcore=0)
    with pytest.raises(ValueError, match="name must be a plain folder name"):
        convert(REVIEWS, META, tmp_path, "a/b")
    # 3 of the 6 users cannot keep any item at 5 interactions
    with pytest.raises(ValueError, match="no interaction is left after the 5-core of the 3 sampled users"):
        convert(REVIEWS, META, tmp_path, NAME, user_fraction=0.5, progress=False)
    assert not (tmp_path / NAME).exists()


def test_user_subsampling(tmp_path: Path) -> None:
    # 40 users who all reviewed the same 10 items: any 10 of them keep all 10 items at k=2.
    pairs = [(f"U{u:02d}", f"I{i}", 1_600_000_000_000 + 1000 * (10 * u + i)) for u in range(40) for i in range(10)]
    reviews, meta = write_synthetic(tmp_path, pairs)

    def users(out: Path, seed: int, source: Path = reviews) -> set[str]:
        stats = convert(source, meta, out, "sampled", kcore=2, user_fraction=0.25, seed=seed, progress=False)
        assert (stats["filtering"]["sampled_users"], stats["users"], stats["items"], stats["interactions"]) == (
            10, 10, 10, 100)
        return {line.split("\t")[0] for line in output(out, ".inter", "sampled").splitlines()[1:]}

    first = users(tmp_path / "a", seed=0)
    assert users(tmp_path / "b", seed=0) == first
    # the draw depends on the users, not on the order of the lines
    shuffled = tmp_path / "shuffled.jsonl"
    lines = reviews.read_text().splitlines(keepends=True)
    random.Random(1).shuffle(lines)
    shuffled.write_text("".join(lines))
    assert users(tmp_path / "c", seed=0, source=shuffled) == first
    assert users(tmp_path / "d", seed=1) != first


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--reviews", str(REVIEWS), "--meta", str(META), "--out", str(tmp_path), "--name", NAME, "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "users: 6\nitems: 6\ninteractions: 30\n" in printed
    assert output(tmp_path, ".inter") == EXPECTED_INTER
    assert main(["--reviews", str(tmp_path / "none.jsonl"), *argv[2:]]) == 1
    assert capsys.readouterr().err == f"error: reviews file not found: {tmp_path / 'none.jsonl'}\n"


def test_module_entry_point(tmp_path: Path) -> None:
    reviews = gzip_copy(REVIEWS, tmp_path / "reviews.jsonl.gz")
    result = subprocess.run(
        [sys.executable, "-m", "recbole_llmsrec.data.amazon2023", "--reviews", str(reviews), "--meta", str(META),
         "--out", str(tmp_path / "out"), "--name", NAME, "--kcore", "5", "--user-fraction", "1", "--seed", "3",
         "--description"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "users: 6\nitems: 6\ninteractions: 30\n" in result.stdout
    assert "line 18" in result.stderr  # the malformed-line warning
    assert output(tmp_path / "out", ".inter") == EXPECTED_INTER
    assert json.loads(output(tmp_path / "out", ".stats.json"))["filtering"]["seed"] == 3


@pytest.mark.parametrize("name", sorted(PAPER_USER_FRACTIONS))
def test_dataset_yaml(name: str) -> None:
    path = ROOT / "properties" / "dataset" / f"{name}.yaml"
    text = path.read_text()
    settings = yaml.safe_load(text)
    assert settings["load_col"] == {
        "inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "title"]}
    assert settings["item_text_field"] == "title"
    assert (settings["USER_ID_FIELD"], settings["ITEM_ID_FIELD"], settings["TIME_FIELD"]) == (
        "user_id", "item_id", "timestamp")
    assert settings["eval_args"] == {
        "split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni100"}
    assert (settings["metrics"], settings["topk"], settings["valid_metric"]) == (["NDCG", "Hit"], [10, 20], "NDCG@10")
    keyed = [line for line in text.splitlines() if re.match(r"\s*[A-Za-z_]+:", line)]
    assert all(re.search(r"# \((str|int|float|bool|list|dict)\) \S", line) for line in keyed), keyed
    fraction = float(re.search(r"user_fraction (\S+) ", text).group(1))
    assert fraction == PAPER_USER_FRACTIONS[name]
    assert f"--user-fraction {fraction:g}" in text


def recbole_config(data_path: Path, name: str, checkpoint_dir: Path, **settings) -> Config:
    """The plugin's Config for a tiny SASRec on ``name`` (its dataset YAML included)."""
    return Config(model="SASRec", dataset=name, config_dict={
        "data_path": str(data_path), "checkpoint_dir": str(checkpoint_dir), "device": "cpu", "use_gpu": False,
        "hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1, "epochs": 1, "train_batch_size": 16,
        "train_neg_sample_args": None, "loss_type": "CE", "state": "ERROR", "show_progress": False, **settings,
    })


def fit_one_epoch(config: Config, dataset) -> tuple[float, dict]:
    """Train SASRec for one epoch; its training loss and validation result."""
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = get_model("SASRec")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    try:
        _, valid_result = trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    finally:  # its writer thread would flush later into log_tensorboard/ relative to another working folder
        trainer.tensorboard.close()
    return trainer.train_loss_dict[0], valid_result


def test_recbole_loads_the_fixture_and_sasrec_trains(
    converted: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = converted
    monkeypatch.chdir(tmp_path)  # RecBole writes log_tensorboard/ into the working folder
    # 6 items cannot fill a top-10 list: this run ranks the top 5
    config = recbole_config(out, NAME, tmp_path / "saved", topk=[5], valid_metric="NDCG@5")
    assert config["eval_args"]["mode"] == {"valid": "uni100", "test": "uni100"}  # from the dataset YAML
    dataset = create_dataset(config)
    assert (dataset.user_num, dataset.item_num, dataset.inter_num) == (7, 7, 30)  # ids count padding 0
    titles = dataset.field2id_token["title"]
    item = dataset.token2id("item_id", "B0CORE0004")
    assert " ".join(titles[t] for t in dataset.item_feat["title"][item].tolist() if t) == (
        '"Schedule 40" PVC Pipe, 3/4" x 10 ft')
    user = dataset.token2id("user_id", "AUSER03")
    times = dataset.inter_feat["timestamp"][dataset.inter_feat["user_id"] == user].tolist()
    assert times == [1603000000.5, 1603086400.5, 1603172800.5, 1603259200.5, 1603345600.5]
    loss, valid_result = fit_one_epoch(config, dataset)
    assert math.isfinite(loss)
    assert set(valid_result) == {"ndcg@5", "hit@5"}


def test_recbole_runs_the_paper_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 30 users x 6 of 25 items: enough items for the YAML's top-20 over 1 + 99 sampled candidates.
    pairs = [(f"U{u:02d}", f"I{(u + d) % 25:02d}", 1_600_000_000_000 + 86_400_000 * (7 * u + d))
             for u in range(30) for d in range(6)]
    reviews, meta = write_synthetic(tmp_path, pairs)
    stats = convert(reviews, meta, tmp_path / "data", NAME, progress=False)
    assert (stats["users"], stats["items"], stats["interactions"]) == (30, 25, 180)
    monkeypatch.chdir(tmp_path)
    config = recbole_config(tmp_path / "data", NAME, tmp_path / "saved")
    loss, valid_result = fit_one_epoch(config, create_dataset(config))
    assert math.isfinite(loss)
    assert set(valid_result) == {"ndcg@10", "ndcg@20", "hit@10", "hit@20"}
    assert 0 <= valid_result["ndcg@10"] <= valid_result["hit@20"] <= 1
