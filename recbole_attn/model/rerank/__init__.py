"""Re-ranking models: they re-order the top-K list of a trained ranker."""

from recbole_attn.model.rerank.prm import PRM
from recbole_attn.model.rerank.prm_trainer import PRMTrainer

__all__ = ["PRM", "PRMTrainer"]
