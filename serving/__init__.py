"""Kaito's inference launcher: vLLM's OpenAI server plus the seed's ``POST /chat``, LoRA adapters
(with strength) and runtime adapter loading, in one process.

This package ships in the inference image and imports nothing from the operator.
Modules that need vLLM import it lazily, so ``serving.options`` and ``serving.fetch`` stay light.
"""
