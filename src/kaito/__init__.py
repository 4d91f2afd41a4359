"""kaito-py: the Kubernetes AI Toolchain Operator, rebuilt on asyncio."""

__version__ = "0.1.0"
