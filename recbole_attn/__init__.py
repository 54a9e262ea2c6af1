"""recbole-attn: attention-based recommenders as RecBole 1.2.1 plugin models.

Importing the package applies ``recbole_attn.compat`` (RecBole's fixes for today's
numpy, pandas and torch) before any RecBole model or trainer is used.
"""

from recbole_attn import compat

compat.apply()

from recbole_attn import evaluator  # noqa: E402,F401  (registers GAUC as a value metric)
from recbole_attn import explain  # noqa: E402  (callable: recbole_attn.explain(...))
from recbole_attn.config import Config  # noqa: E402
from recbole_attn.model import MODELS  # noqa: E402
from recbole_attn.quick_start import (  # noqa: E402
    load_data_and_model,
    objective_function,
    run,
    run_recbole,
)

__version__ = "0.1.0"
__all__ = ["Config", "MODELS", "explain", "load_data_and_model", "objective_function", "run", "run_recbole"]
