"""The kaito.sh and karpenter.sh API types as pydantic models (pure, no I/O)."""
