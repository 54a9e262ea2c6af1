"""AttnBERT4Rec: BERT4Rec as in its reference code, built on NOVABERT without side information.

Paper: Fei Sun, Jun Liu, Jian Wu, Changhua Pei, Xiao Lin, Wenwu Ou, Peng Jiang.
"BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from
Transformer", CIKM 2019, arXiv 1904.06690.

Reference code followed: github.com/FeiSun/BERT4Rec at commit
615eaf2004abecda487a38d5b0c72f3dcfcae5b3 -- ``modeling.py`` (model), ``gen_data_fin.py``
(training windows, masking), ``optimization.py`` (AdamW-style decay 0.01 not on
LayerNorm/bias, linear warm-up then linear decay to 0, gradient clipping at global norm
5.0) and ``bert_train/bert_config_ml-1m_64.json`` (2 layers, 2 heads, H = 64, inner 256,
dropout 0.2, init std 0.02); the recipe is in ``properties/model/AttnBERT4Rec.yaml``.

Named ``AttnBERT4Rec`` so as not to shadow RecBole's own ``BERT4Rec`` (RecBole keys its
presets and checkpoints on the class name). It differs from RecBole's BERT4Rec in the
cloze masking (vectorised on the device, fresh every batch, instead of a per-row Python
loop in the data transform) and in training on the target appended to the history.

Deviations from the reference code: those of NOVABERT's cloze training, listed with their
reasons in ``recbole_attn/model/sequential_recommender/nova_bert.py`` (training samples,
the share of last-item-only samples, hidden side values, the optimiser's bias correction,
learning rate and batch size of RecBole's budgets). Side-information options are fixed
(``BERT4REC_SIDE_OPTIONS``): no per-side LayerNorm, as the input is LayerNorm(item +
position), BERT's embedding layer.
"""

from __future__ import annotations

from recbole_attn.errors import ConfigError
from recbole_attn.model.sequential_recommender.nova_bert import NOVABERT

# What makes NOVABERT the paper's BERT4Rec: input = LayerNorm(item + position), no side fields.
BERT4REC_SIDE_OPTIONS = {
    "item_side_fields": [],
    "behavior_side_fields": [],
    "use_position": True,
    "side_layer_norm": False,
    "behavior_float_encoding": "bucket",
    "num_buckets": 1,
    "fusion_type": "add",
    "attention_type": "invasive",
}


class AttnBERT4Rec(NOVABERT):
    r"""BERT4Rec (Sun et al.): NOVABERT with ``attention_type: invasive``, ``fusion_type: add``,
    learned positions and no other side information.

    Equations of the paper -> methods (all inherited from ``NOVABERT``):

    - Embedding layer h^0_i = v_i + p_i, LayerNorm, dropout -> ``NOVABERT.forward``.
    - Transformer layer: multi-head self-attention over the whole sequence (bidirectional),
      position-wise feed-forward with GELU, residual, dropout, LayerNorm ->
      ``recbole_attn.model.nova_layers.NOVALayer.forward``.
    - Output layer P(v) = softmax(GELU(h W^P + b^P) E^T + b^O) -> ``NOVABERT.forward``,
      ``NOVABERT.logits``.
    - Cloze objective on masked items -> ``NOVABERT.calculate_loss``
      (``recbole_attn.model.cloze.cloze_inputs``).
    - Test: append [mask] after the history -> ``NOVABERT.full_sort_predict``.

    Side-information settings are fixed; setting one to another value raises
    ``ConfigError`` (use NOVABERT for side information).
    """

    def _side_options(self, config) -> dict:
        for key, fixed in BERT4REC_SIDE_OPTIONS.items():
            if key in ("num_buckets", "behavior_float_encoding", "side_layer_norm"):
                continue  # unused without float side fields
            value = config.final_config_dict.get(key)
            if value is None:
                continue
            if (list(value) if isinstance(value, (list, tuple)) else value) != fixed:
                raise ConfigError(
                    f"AttnBERT4Rec is BERT4Rec without side information: {key} is fixed to "
                    f"{fixed!r}, got {value!r}. Use --model=NOVABERT for side information."
                )
        fixed = BERT4REC_SIDE_OPTIONS
        return {k: (list(v) if isinstance(v, list) else v) for k, v in fixed.items()}
