"""PRM: a frozen ranker's top-K lists re-ranked; invariants, the protocol and bad input."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import sys

import pytest
import torch
import yaml

from recbole_attn import load_data_and_model
from recbole_attn.cli import main
from recbole_attn.config import PROPERTIES_DIR, ConfigError
from recbole_attn.model.rerank import prm as prm_module
from recbole_attn.model.rerank import prm_trainer as prm_trainer_module
from recbole_attn.model.rerank import ranker as ranker_module
from recbole_attn.quick_start import run, run_with_ranker
from recbole_attn.trainer import get_trainer
from conftest import build, tiny_config, train_tiny

LOAD_COL = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "category"]}
METRICS = dict(metrics=["Recall", "MRR", "NDCG", "Precision", "MAP"], topk=[5, 10], valid_metric="NDCG@10")


@pytest.fixture(scope="module")
def ranker(tmp_path_factory):
    """A tiny SASRec trained for one epoch: (its checkpoint folder, its checkpoint file)."""
    folder = tmp_path_factory.mktemp("ranker")
    _, path = train_tiny(folder, "SASRec", epochs=1, load_col=LOAD_COL)
    return folder, path


def prm_config(ranker, **overrides) -> dict:
    folder, path = ranker
    cfg = dict(load_col=LOAD_COL, checkpoint_dir=str(folder), ranker_checkpoint=str(path), list_length=10, **METRICS)
    cfg.update(overrides)
    return cfg


def build_prm(ranker, **overrides):
    return build("PRM", **prm_config(ranker, **overrides))


def trainer_for(config, model):
    return get_trainer(config["MODEL_TYPE"], "PRM", type(model))(config, model)


# ---------------------------------------------------------------- config


def test_every_key_the_model_reads_is_in_its_yaml():
    source = "".join(inspect.getsource(m) for m in (prm_module, prm_trainer_module, ranker_module))
    read = set(re.findall(r"config\[\"(\w+)\"\]", source))
    ours = set(yaml.safe_load((PROPERTIES_DIR / "model" / "PRM.yaml").read_text()))
    recbole = {"model", "dataset", "eval_args", "device", "checkpoint_dir", "USER_ID_FIELD", "ITEM_ID_FIELD", "LIST_SUFFIX",
               "ITEM_LIST_LENGTH_FIELD"}
    assert read - recbole <= ours, read - recbole - ours
    assert {"ranker_checkpoint", "trust_checkpoint", "use_rank_embedding", "use_personal_vector"} <= ours


# ---------------------------------------------------------------- invariants


def test_ranker_weights_never_change_while_prm_trains(ranker):
    config, model, train, valid, test = build_prm(ranker, epochs=2)
    assert model.personal_mode == "sequence" and model.feature_fields == ["category"]
    before_ranker = {k: v.clone() for k, v in model.ranker.state_dict().items()}
    before_prm = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("ranker.")}
    trainer = trainer_for(config, model)
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in model.ranker.parameters()}
    trainer.fit(train, valid, saved=True)
    assert not model.ranker.training  # trainer.fit put PRM in train mode; the ranker stays in eval
    trainer.evaluate(test, load_best_model=True)  # reloads PRM's best checkpoint
    for key, value in model.ranker.state_dict().items():
        assert torch.equal(value, before_ranker[key]), key
    assert all(not p.requires_grad for p in model.ranker.parameters())
    changed = [k for k, v in model.state_dict().items() if k in before_prm and not torch.equal(v, before_prm[k])]
    assert changed, "PRM's own weights did not train"


def _list_inputs(model, test):
    model.eval()
    batch = next(iter(test))[0]
    _, items, list_scores = model.ranker_lists(batch)
    pv = model.personal_vectors(batch, items, list_scores)
    return items, pv


def test_without_rank_embedding_scores_are_permutation_equivariant(ranker):
    _, model, _, _, test = build_prm(ranker, use_rank_embedding=False)
    items, pv = _list_inputs(model, test)
    perm = torch.randperm(items.size(1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(items, pv)
        shuffled = model(items[:, perm], pv[:, perm])
    torch.testing.assert_close(shuffled, logits[:, perm], rtol=1e-5, atol=1e-5)


def test_rank_embedding_is_the_only_order_signal(ranker):
    _, model, _, _, test = build_prm(ranker, use_rank_embedding=True)
    items, pv = _list_inputs(model, test)
    ranks = model.ranks.expand_as(items)
    perm = torch.randperm(items.size(1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.rank_embedding.weight.normal_()  # make the rank signal strong
        logits = model(items, pv, ranks)
        # Shuffled list, each item keeping its initial rank: scores permute along.
        moved = model(items[:, perm], pv[:, perm], ranks[:, perm])
        # Shuffled list, ranks by new position: the rank embedding changes the scores.
        renumbered = model(items[:, perm], pv[:, perm], ranks)
    torch.testing.assert_close(moved, logits[:, perm], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(renumbered, logits[:, perm], atol=1e-3)


def test_lists_never_contain_padding(ranker, monkeypatch):
    _, model, _, _, test = build_prm(ranker)
    model.eval()
    k = model.list_length
    for batch, *_ in test:
        _, items, _ = model.ranker_lists(batch)
        assert items.shape == (len(batch), k) and bool((items > 0).all())
        assert all(len(set(row.tolist())) == k for row in items)
    # Even a ranker that scores the padding id highest never puts it in a list.
    original = model.ranker.full_sort_predict

    def pad_first(interaction):
        scores = original(interaction).clone()
        scores[:, 0] = 1e9
        return scores

    monkeypatch.setattr(model.ranker, "full_sort_predict", pad_first)
    batch = next(iter(test))[0]
    _, items, _ = model.ranker_lists(batch)
    assert bool((items > 0).all())
    full = model.full_sort_predict(batch)
    assert bool((full[:, 0] < full[:, 1:].min(dim=1).values).all())


def test_full_sort_predict_reorders_only_the_top_k(ranker):
    _, model, _, _, test = build_prm(ranker, list_length=8)
    model.eval()
    batch = next(iter(test))[0]
    with torch.no_grad():
        scores, items, logits = model.list_logits(batch)
        reranked = model.full_sort_predict(batch)
        model.rerank = False
        initial = model.full_sort_predict(batch)
        model.rerank = True
    k = model.list_length
    assert torch.equal(initial.topk(k, dim=1).indices, items)  # initial = the ranker's order
    top = reranked.topk(k, dim=1).indices
    assert torch.equal(top.sort(dim=1).values, items.sort(dim=1).values)  # same items ...
    assert torch.equal(top, items.gather(1, logits.argsort(dim=1, descending=True, stable=True)))  # ... PRM's order
    rest = initial.clone().scatter_(1, items, float("inf"))
    assert torch.equal(reranked.scatter(1, items, float("inf")).argsort(dim=1), rest.argsort(dim=1))


def test_no_test_item_reaches_prms_training_lists(ranker, monkeypatch):
    config, model, train, valid, test = build_prm(ranker, epochs=1, prm_holdout_ratio=0.25)
    seen = []
    original = model.calculate_loss

    def recording(interaction):
        seen.append(interaction)
        return original(interaction)

    monkeypatch.setattr(model, "calculate_loss", recording)
    trainer_for(config, model).fit(train, valid, saved=False)
    uid, iid, seq, length = "user_id", "item_id", "item_id_list", "item_length"

    def rows(data):
        f = data.dataset.inter_feat
        return {int(u): (int(i), s[: int(n)].tolist()) for u, i, s, n in zip(f[uid], f[iid], f[seq], f[length])}

    valid_rows, test_rows = rows(valid), rows(test)
    max_len = config["MAX_ITEM_LIST_LENGTH"]
    trained_users = []
    for inter in seen:
        for u, i, s, n in zip(inter[uid], inter[iid], inter[seq], inter[length]):
            u, i, history = int(u), int(i), s[: int(n)].tolist()
            trained_users.append(u)
            assert (i, history) == valid_rows[u]  # the validation-point row: label = validation item
            # The test row's history is exactly this history plus the label: the test item comes
            # after everything PRM trained on, and is never its label or in its history.
            test_item, test_history = test_rows[u]
            assert test_history == (history + [i])[-max_len:]
    trained = set(trained_users)
    assert len(trained) == len(trained_users)  # one list per user per epoch
    held_out = set(valid_rows) - trained
    assert len(held_out) == round(0.25 * len(valid_rows))  # early-stopping users never train


def test_save_load_gives_identical_scores(ranker):
    config, model, train, valid, test = build_prm(ranker, epochs=2)
    trainer = trainer_for(config, model)
    trainer.fit(train, valid, saved=True)
    trainer.evaluate(test, load_best_model=True)
    model.eval()
    batch = next(iter(test))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
    _, loaded, *_ = load_data_and_model(trainer.saved_model_file)
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.full_sort_predict(batch), scores)


def test_a_checkpoint_with_the_earlier_item_feature_keys_loads_the_same_weights(ranker):
    _, model, *_ = build_prm(ranker)
    state = model.state_dict()
    renamed = {"item_embedding.id_embedding.weight": "item_embedding.weight",
               "item_embedding.embeddings.category.weight": "field_embeddings.category.weight"}
    assert set(renamed) <= set(state)
    old = {renamed.get(k, k): v for k, v in state.items()}  # the keys PRM wrote before
    _, fresh, *_ = build_prm(ranker, seed=7)
    assert not torch.equal(fresh.state_dict()["item_embedding.id_embedding.weight"], state[next(iter(renamed))])
    fresh.load_state_dict(old)  # strict: no key missing or left over
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


def test_an_item_feature_of_an_unsupported_type_is_named_with_prms_key(ranker, tmp_path):
    from conftest import FIXTURES
    from recbole_attn.config import Config
    from recbole_attn.quick_start import prepare

    folder = tmp_path / "vec"
    folder.mkdir()
    shutil.copy(FIXTURES / "tiny" / "tiny.inter", folder / "vec.inter")
    lines = ["item_id:token\tembedding:float_seq"] + [f"{i}\t{i * 0.1:.1f} 1.0" for i in range(1, 61)]
    (folder / "vec.item").write_text("\n".join(lines) + "\n")
    load_col = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "embedding"]}
    message = r"'embedding' has type float_seq.*remove it from item_feature_fields"
    cfg = tiny_config(**prm_config(ranker, load_col=load_col, data_path=str(tmp_path), item_feature_fields=["embedding"]))
    with pytest.raises(ConfigError, match=message):  # raised by the embedding, before the ranker loads
        prepare(Config(model="PRM", dataset="vec", config_dict=cfg), log=False, with_trainer=False)


def test_same_seed_same_numbers(ranker):
    results = []
    for _ in range(2):
        config, model, train, valid, test = build_prm(ranker, epochs=2)
        trainer = trainer_for(config, model)
        trainer.fit(train, valid, saved=False)
        results.append(dict(trainer.evaluate(test, load_best_model=False)))
    assert results[0] == results[1]


def test_run_with_ranker_reports_initial_and_reranked_on_the_same_evaluator(tmp_path):
    cfg = tiny_config(checkpoint_dir=str(tmp_path), epochs=1, load_col=LOAD_COL, list_length=10, **METRICS)
    result = run_with_ranker("PRM", "tiny", "SASRec", config_dict=cfg)
    initial, reranked = result["initial_test_result"], result["test_result"]
    assert set(initial) == set(reranked) == {f"{m}@{k}" for m in ("recall", "mrr", "ndcg", "precision", "map")
                                             for k in (5, 10)}
    # The initial list measured through PRM equals the ranker's own test result.
    assert initial == pytest.approx(result["ranker_result"]["test_result"], abs=1e-4)
    # Re-ordering within the top 10 cannot change recall@10 / precision@10.
    assert reranked["recall@10"] == pytest.approx(initial["recall@10"], abs=1e-4)
    assert reranked["precision@10"] == pytest.approx(initial["precision@10"], abs=1e-4)
    assert os.path.dirname(result["ranker_checkpoint"]) == str(tmp_path)


def test_a_ranker_that_splits_its_score_gives_its_terms_as_personal_vector(tmp_path, monkeypatch):
    """AttRec scores by distances, not u . v_i: PV_i = [its score terms ; s_i]."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    run("AttRec", "tiny", config_dict=tiny_config(checkpoint_dir=str(tmp_path), epochs=1, load_col=LOAD_COL))
    (path,) = tmp_path.glob("AttRec-*.pth")
    _, model, _, _, test_data = build_prm((tmp_path, path))
    assert model.personal_mode == "terms"
    batch = next(iter(test_data))[0]
    _, items, list_scores = model.ranker_lists(batch)
    pv = model.personal_vectors(batch, items, list_scores)
    torch.testing.assert_close(pv[..., :-1], model.ranker.score_terms(batch, items))
    torch.testing.assert_close(pv[..., :-1].sum(-1), list_scores, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- bad input


def _rewrite(src, dst, edit):
    checkpoint = torch.load(src, weights_only=False)
    edit(checkpoint)
    torch.save(checkpoint, dst)
    return dst


def test_missing_or_unset_checkpoint(ranker):
    folder, _ = ranker
    with pytest.raises(ConfigError, match="ranker_checkpoint not found"):
        build_prm(ranker, ranker_checkpoint=str(folder / "nope.pth"))
    with pytest.raises(ConfigError, match="needs an initial ranker"):
        build_prm(ranker, ranker_checkpoint=None)


def test_unreadable_checkpoint(ranker):
    folder, _ = ranker
    garbage = folder / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="unreadable"):
        build_prm(ranker, ranker_checkpoint=str(garbage))


def test_untrusted_checkpoint_needs_the_flag(ranker, tmp_path):
    outside = tmp_path / "elsewhere.pth"
    shutil.copy(ranker[1], outside)
    with pytest.raises(ConfigError, match="trust_checkpoint=True"):
        build_prm(ranker, ranker_checkpoint=str(outside))
    _, model, *_ = build_prm(ranker, ranker_checkpoint=str(outside), trust_checkpoint=True)
    assert type(model.ranker).__name__ == "SASRec"


def test_checkpoint_of_another_dataset(ranker):
    folder, path = ranker

    def other_name(c):
        c["config"]["dataset"] = "ml-100k"

    def more_items(c):
        w = c["state_dict"]["item_embedding.weight"]
        c["state_dict"]["item_embedding.weight"] = torch.cat([w, w[:5]])

    with pytest.raises(ConfigError, match="trained on dataset 'ml-100k'"):
        build_prm(ranker, ranker_checkpoint=str(_rewrite(path, folder / "other.pth", other_name)))
    with pytest.raises(ConfigError, match=r"item count.*item_embedding\.weight"):
        build_prm(ranker, ranker_checkpoint=str(_rewrite(path, folder / "bigger.pth", more_items)))


def test_ranker_trained_on_another_split(ranker):
    folder, path = ranker

    def random_split(c):
        c["config"]["eval_args"] = dict(c["config"]["eval_args"], split={"RS": [0.8, 0.1, 0.1]}, order="RO")

    with pytest.raises(ConfigError, match="same split"):
        build_prm(ranker, ranker_checkpoint=str(_rewrite(path, folder / "random.pth", random_split)))


def test_ranker_without_full_ranking(ranker, monkeypatch):
    from recbole.model.abstract_recommender import AbstractRecommender
    from recbole.model.sequential_recommender import SASRec

    from recbole_attn.model import MODELS

    class PointwiseOnly(SASRec):
        full_sort_predict = AbstractRecommender.full_sort_predict

    monkeypatch.setitem(MODELS, "PointwiseOnly", PointwiseOnly)
    folder, path = ranker

    def rename(c):
        c["config"]["model"] = "PointwiseOnly"

    with pytest.raises(ConfigError, match="cannot produce full rankings"):
        build_prm(ranker, ranker_checkpoint=str(_rewrite(path, folder / "pointwise.pth", rename)))


def test_list_longer_than_the_item_count(ranker):
    with pytest.raises(ConfigError, match="list_length=1000"):
        build_prm(ranker, list_length=1000)


def test_history_length_must_match_the_rankers(ranker):
    with pytest.raises(ConfigError, match="MAX_ITEM_LIST_LENGTH=10"):
        build_prm(ranker, MAX_ITEM_LIST_LENGTH=7)


def test_cli_ranker_flag_is_for_rerankers_only(capsys):
    assert main(["--model=SASRec", "--ranker=SASRec", "--dataset=ml-100k"]) == 2
    assert "only applies to a re-ranking model" in capsys.readouterr().err


def test_cli_trains_the_ranker_then_prm_and_prints_both(tmp_path, caplog):
    import logging

    from conftest import FIXTURES, TINY_YAML

    caplog.set_level(logging.INFO)  # RecBole logs through the root logger, which pytest captures

    args = ["--model=PRM", "--ranker=SASRec", "--dataset=tiny", f"--data_path={FIXTURES}",
            f"--config_files={TINY_YAML}", "epochs=1", "list_length=10", "state=INFO", f"checkpoint_dir={tmp_path}"]
    assert main(args) == 0
    text = caplog.text
    assert "initial vs re-ranked (test)" in text and "ndcg@5" in text.split("initial vs re-ranked")[-1]
    assert len(list(tmp_path.glob("SASRec-*.pth"))) == 1 and len(list(tmp_path.glob("PRM-*.pth"))) == 1
