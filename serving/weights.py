"""Pre-flight check of the model source, so a pod that cannot get its weights says why.

Without it vLLM fails deep inside a download with a long traceback, and the Workspace shows
only "crash loop".  The check names the source (the weights directory the init container
fills, or the hub and the repository) and the fix; the launcher writes the message to the
container's termination log, which the operator copies into the Workspace's condition.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from serving.options import OptionsError

DEFAULT_HUB = "https://huggingface.co"
TERMINATION_LOG = Path("/dev/termination-log")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_HUB).rstrip("/")


def _request(url: str, token: str | None, method: str = "GET") -> urllib.request.Request:
    request = urllib.request.Request(url, headers={"User-Agent": "kaito-serving"}, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    return request


def _access_error(endpoint: str, model: str, code: int, token: str | None) -> OptionsError:
    how = (
        "the HF_TOKEN from presetOptions.modelAccessSecret was refused; accept the model's "
        "terms on the hub with that token's account"
        if token
        else "set presetOptions.modelAccessSecret to a Secret whose HF_TOKEN can read it"
    )
    return OptionsError(f"the model hub {endpoint} refused access to {model} (HTTP {code}): {how}")


def check_model_source(model: str, revision: str | None = None, timeout: float = 10.0) -> None:
    """Raise OptionsError when `model` (a directory or a hub repository) cannot be loaded.

    The hub answers a missing repository with 401 to anonymous callers, and a gated one's
    metadata to anyone: its ``X-Error-Code`` and the ``gated`` flag tell them apart, and a gated
    model's config.json is asked for with the token, as vLLM will.
    """
    if model.startswith("/"):
        path = Path(model)
        if not (path / "config.json").is_file():
            raise OptionsError(
                f"model directory {model} has no config.json: the model-weights-downloader init "
                "container did not fill it (see its logs), or the preset's weights image is empty"
            )
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # offline by choice: vLLM reads its cache and says what is missing
    endpoint = hub_endpoint()
    rev = revision or "main"
    token = os.environ.get("HF_TOKEN")
    try:
        url = f"{endpoint}/api/models/{model}/revision/{rev}"
        with urllib.request.urlopen(_request(url, token), timeout=timeout) as resp:
            info = json.load(resp)
        if isinstance(info, dict) and info.get("gated"):
            if not token:
                raise OptionsError(
                    f"{model} on {endpoint} is gated: set presetOptions.modelAccessSecret to a "
                    "Secret whose HF_TOKEN has been granted access"
                )
            config = f"{endpoint}/{model}/resolve/{rev}/config.json"
            with urllib.request.urlopen(_request(config, token, "HEAD"), timeout=timeout):
                pass
    except OptionsError:
        raise
    except urllib.error.HTTPError as err:
        code = err.headers.get("X-Error-Code", "") if err.headers else ""
        if code == "RepoNotFound" or (err.code == 404 and code != "GatedRepo"):
            private = "" if token else " (a private one needs presetOptions.modelAccessSecret)"
            raise OptionsError(
                f"model {model} (revision {rev}) was not found on {endpoint}{private}"
            ) from None
        if err.code in (401, 403):
            raise _access_error(endpoint, model, err.code, token) from None
        raise OptionsError(
            f"the model hub {endpoint} answered HTTP {err.code} for {model}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise OptionsError(
            f"cannot reach the model hub {endpoint} to download {model}: {reason}; the pod needs "
            "outbound access to the hub (HF_TOKEN from presetOptions.modelAccessSecret for gated "
            "models), or publish the weights as an image (hack/push-model) and use it as the "
            "preset image"
        ) from None


def report_termination(message: str) -> None:
    """Leave the reason where Kubernetes shows it (the pod's terminated state)."""
    with contextlib.suppress(OSError):
        TERMINATION_LOG.write_text(message[:4096])
