"""Model catalog, GPU SKU table, sizing and vLLM arguments: pure data and functions."""

from kaito.presets.catalog import Preset, get_preset, list_presets, load_catalog
from kaito.presets.errors import CatalogError, FitError, SpecError
from kaito.presets.estimator import Estimate, estimate, estimate_byo
from kaito.presets.skus import Sku, byo_sku, get_sku, list_skus, load_skus, sku_from_node_labels
from kaito.presets.vllm import (
    AdapterSpec,
    Launch,
    serving_dtype,
    user_max_model_len,
    user_vllm_section,
    vllm_launch,
)

__all__ = [
    "AdapterSpec",
    "CatalogError",
    "Estimate",
    "FitError",
    "Launch",
    "Preset",
    "Sku",
    "SpecError",
    "byo_sku",
    "estimate",
    "estimate_byo",
    "get_preset",
    "get_sku",
    "list_presets",
    "list_skus",
    "load_catalog",
    "load_skus",
    "serving_dtype",
    "sku_from_node_labels",
    "user_max_model_len",
    "user_vllm_section",
    "vllm_launch",
]
