"""Bad LLMSRec settings and data are refused up front, with the key and the fix in the message."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from recbole_llmsrec import quick_start
from recbole_llmsrec.quick_start import run_recbole_llmsrec

DATA_DIR = Path(__file__).parent / "data"


@pytest.mark.parametrize("overrides, message", [
    ({"history_length": 0}, "history_length=0 must be a positive integer"),
    ({"num_negatives": -2}, "num_negatives=-2 must be a positive integer"),
    ({"validations_per_epoch": 0}, "validations_per_epoch=0 must be a positive integer"),
    ({"lr_decay_per_validation": 0}, r"lr_decay_per_validation=0 must be in \(0, 1\]"),
    ({"eval_args": {"mode": "uniform100"}}, "eval_args.mode='uniform100' .* use full, uni<N>"),
    ({"item_text_field": "movie_title"}, "item_text_field='movie_title' is not a loaded item field"),
])
def test_bad_settings_are_refused_before_the_teacher_trains(tiny_settings, overrides, message, monkeypatch, tmp_path):
    monkeypatch.setattr(quick_start, "train_teacher", lambda *a, **k: pytest.fail("the teacher trained first"))
    settings = {**tiny_settings, "checkpoint_dir": str(tmp_path), **overrides}
    if "eval_args" in overrides:
        settings["eval_args"] = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", **overrides["eval_args"]}
    with pytest.raises(ValueError, match=message):
        run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=settings)


def test_timestamps_that_are_not_unix_seconds_leave_dates_out_with_a_warning(tiny_settings, tmp_path, caplog):
    """Milliseconds would put the year 30000 in prompts: the run warns and writes no dates."""
    from helpers import build_llmsrec
    from recbole_llmsrec.validation import check_inputs

    data = tmp_path / "data"
    shutil.copytree(DATA_DIR / "tiny", data / "tiny")
    inter = data / "tiny" / "tiny.inter"
    header, *rows = inter.read_text().splitlines()
    rows = ["\t".join(fields[:3] + [str(int(float(fields[3])) * 1000)]) for fields in (row.split("\t") for row in rows)]
    inter.write_text("\n".join([header, *rows]) + "\n")
    config, model, (train_data, _, _) = build_llmsrec(tiny_settings, data_path=str(data), checkpoint_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        check_inputs(config, train_data._dataset)
    assert "does not hold unix seconds" in caplog.text and "prompt_dates: False" in caplog.text
    batch = next(iter(train_data))
    assert model._time_seq(batch) is None
