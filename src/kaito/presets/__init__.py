"""Model catalog, GPU SKU table, sizing and vLLM arguments: pure data and functions."""
