"""Dataset tools: converters from public raw formats to RecBole atomic files."""

from __future__ import annotations

from recbole_attn.data.convert import ConvertError, convert_s3rec, convert_taobao

__all__ = ["ConvertError", "convert_s3rec", "convert_taobao"]
