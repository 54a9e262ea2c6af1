"""Attention explanations: ``recbole_attn.explain(checkpoint_or_model, user, items=None, k=10)``.

For a user's history as the model sees it: the model's top-k items with their scores and,
for each recommended or given item, the attention that produced the score, recorded from
that same forward pass (``capture``); JSON and PNG heatmaps (``plot``). The package is
callable: ``recbole_attn.explain(...)`` is ``recbole_attn.explain.api.explain(...)``.
"""

from __future__ import annotations

import sys
import types

from recbole_attn.explain import capture  # noqa: F401  (imported by the attention modules)


def __getattr__(name: str):
    if name == "explain":  # loaded lazily: the api imports the models, which import capture
        from recbole_attn.explain.api import explain

        return explain
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from recbole_attn.explain.api import explain

        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
