"""Plugin models, by the name users pass as ``--model``."""

from recbole_attn.model.sequential_recommender.attrec import AttRec

MODELS: dict[str, type] = {
    "AttRec": AttRec,
}

__all__ = ["MODELS", "AttRec"]
