"""Recommendations and vectors from trained checkpoints, through the API and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from recbole_llmsrec.quick_start import load_data_and_model, run_recbole_llmsrec
from recbole_llmsrec.recommend import Recommender

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tiny_settings, tmp_path_factory):
    """Checkpoints of an LLMSRec run and of its teacher (a RecBole SASRec) on the tiny dataset."""
    settings = {**tiny_settings, "checkpoint_dir": str(tmp_path_factory.mktemp("saved"))}
    result = run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=settings)
    return {"LLMSRec": result["saved_model_file"], "SASRec": result["teacher_checkpoint"]}


def expected_top_k(checkpoint: str, k: int) -> dict[str, list[str]]:
    """Top-k by the model's own full_sort_predict on RecBole's test rows (history = all but the last item)."""
    config, model, dataset, _, _, test_data = load_data_and_model(checkpoint)
    model.eval()
    interaction = next(iter(test_data))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
    scores[:, 0] = -torch.inf
    for row, history in enumerate(interaction[model.ITEM_SEQ]):
        scores[row, history] = -torch.inf
    users = dataset.field2id_token[dataset.uid_field][interaction[dataset.uid_field].numpy()]
    items = dataset.field2id_token[dataset.iid_field]
    lengths = interaction[model.ITEM_SEQ_LEN].tolist()
    histories = [[str(items[i]) for i in seq[:n].tolist()] for seq, n in zip(interaction[model.ITEM_SEQ], lengths)]
    times = [seq[:n].tolist() for seq, n in zip(interaction["timestamp_list"], lengths)]
    return {str(u): ([str(items[i]) for i in top.tolist()], hist, stamps)
            for u, top, hist, stamps in zip(users, scores.topk(k).indices, histories, times)}


@pytest.mark.parametrize("name", ["LLMSRec", "SASRec"])
def test_recommendations_for_a_history_equal_ranking_by_full_sort_predict(trained, name):
    expected = expected_top_k(trained[name], k=5)
    recommender = Recommender.from_checkpoint(trained[name])
    for top, history, stamps in list(expected.values())[:4]:
        got = recommender.recommend_history(history, stamps, k=5)
        assert got.items == top and len(got.scores) == 5 and got.scores == sorted(got.scores, reverse=True)


def test_known_users_get_unseen_items_and_unknown_tokens_are_named(trained):
    recommender = Recommender.from_checkpoint(trained["LLMSRec"])
    (row,) = recommender.recommend_users(["u1"], k=7)
    seen = set(recommender.dataset.field2id_token["item_id"][recommender._histories[1][0]])
    assert row.user == "u1" and len(row.items) == 7 and not set(row.items) & seen
    with pytest.raises(KeyError, match=r"Unknown item tokens \['nope'\]"):
        recommender.recommend_history(["i1", "nope"])
    assert recommender.recommend_history(["i1", "nope"], skip_unknown=True).items == recommender.recommend_history(["i1"]).items
    with pytest.raises(KeyError, match=r"Unknown user tokens \['ghost'\]"):
        recommender.recommend_users(["ghost"])


def test_exported_vectors_rank_like_the_recommendations(trained, tmp_path):
    recommender = Recommender.from_checkpoint(trained["SASRec"])
    path = tmp_path / "vectors.safetensors"
    recommender.export(path)
    with safe_open(str(path), framework="pt") as handle:
        users, items = handle.get_tensor("user_vectors"), handle.get_tensor("item_vectors")
        metadata = handle.metadata()
    user_tokens = __import__("json").loads(metadata["user_tokens"])
    item_tokens = __import__("json").loads(metadata["item_tokens"])
    assert users.shape[0] == len(user_tokens) and items.shape[0] == len(item_tokens) and users.shape[1] == items.shape[1]
    rows = recommender.recommend_users(user_tokens[:3], k=4, exclude_seen=False)
    for row, vector in zip(rows, users[:3]):
        assert [item_tokens[i] for i in (items @ vector).topk(4).indices.tolist()] == row.items


def test_command_line_recommend_and_export(trained, tmp_path):
    out = tmp_path / "recs.tsv"
    subprocess.run([sys.executable, str(ROOT / "run_recbole_llmsrec.py"), f"--recommend={trained['LLMSRec']}",
                    "--users=u1,u2", "--topk=3", f"--out={out}"], check=True, cwd=ROOT, capture_output=True)
    lines = out.read_text().splitlines()
    assert lines[0] == "user\trank\titem\tscore" and len(lines) == 1 + 2 * 3
    api = {row.user: row.items for row in Recommender.from_checkpoint(trained["LLMSRec"]).recommend_users(["u1", "u2"], k=3)}
    assert [line.split("\t")[2] for line in lines[1:4]] == api["u1"]
    vectors = tmp_path / "v.safetensors"
    subprocess.run([sys.executable, str(ROOT / "run_recbole_llmsrec.py"), f"--export={trained['SASRec']}",
                    f"--out={vectors}"], check=True, cwd=ROOT, capture_output=True)
    with safe_open(str(vectors), framework="pt") as handle:
        assert set(handle.keys()) == {"user_vectors", "item_vectors"}
