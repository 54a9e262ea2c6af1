"""Plugin models, by the name users pass as ``--model``."""

from recbole_attn.model.sequential_recommender.attn_bert4rec import AttnBERT4Rec
from recbole_attn.model.sequential_recommender.attrec import AttRec
from recbole_attn.model.sequential_recommender.nova_bert import NOVABERT

MODELS: dict[str, type] = {
    "AttRec": AttRec,
    "NOVABERT": NOVABERT,
    "AttnBERT4Rec": AttnBERT4Rec,
}

__all__ = ["MODELS", "AttRec", "AttnBERT4Rec", "NOVABERT"]
