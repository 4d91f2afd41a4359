"""How the tuning stages talk to people and to Kubernetes.

Progress goes to stdout as one JSON object a line, so ``kubectl logs`` stays readable and a
controller or test can parse it. A failure ends the process with one line naming the cause,
also written to the container's termination log so it appears in the pod status.
Exit code 2 means bad input (retrying cannot help); the Job's pod failure policy relies on it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

TERMINATION_LOG = Path("/dev/termination-log")
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class StageError(Exception):
    """A failure caused by the user's input or settings; the message says what to change."""


def event(stage: str, name: str, **fields: Any) -> None:
    """One parseable progress line on stdout."""
    record = {"ts": round(time.time(), 3), "stage": stage, "event": name, **fields}
    print(json.dumps(record, default=str), flush=True)


def fail(stage: str, message: str, code: int) -> NoReturn:
    event(stage, "error", message=message)
    print(f"{stage}: error: {message}", file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):  # not in a pod, or the kubelet gave no termination log
        TERMINATION_LOG.write_text(f"{stage}: {message}\n")
    raise SystemExit(code)


def run_stage(stage: str, main: Callable[[], None]) -> None:
    """Run a stage's main, turning every failure into one line and an exit code."""
    try:
        main()
    except StageError as err:
        fail(stage, str(err), EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        fail(stage, "interrupted", EXIT_FAILED)
    except Exception as err:
        fail(stage, f"{type(err).__name__}: {err}", EXIT_FAILED)
