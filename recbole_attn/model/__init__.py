"""Plugin models, by the name users pass as ``--model``."""

from recbole_attn.model.context_aware_recommender.atrank import ATRank
from recbole_attn.model.context_aware_recommender.dien import AttnDIEN
from recbole_attn.model.context_aware_recommender.bst import BST
from recbole_attn.model.context_aware_recommender.din import AttnDIN
from recbole_attn.model.rerank.prm import PRM
from recbole_attn.model.sequential_recommender.attn_bert4rec import AttnBERT4Rec
from recbole_attn.model.sequential_recommender.attrec import AttRec
from recbole_attn.model.sequential_recommender.nova_bert import NOVABERT

MODELS: dict[str, type] = {
    "AttRec": AttRec,
    "NOVABERT": NOVABERT,
    "AttnBERT4Rec": AttnBERT4Rec,
    "AttnDIEN": AttnDIEN,
    "AttnDIN": AttnDIN,
    "BST": BST,
    "ATRank": ATRank,
    "PRM": PRM,
}

__all__ = ["MODELS", *MODELS]
