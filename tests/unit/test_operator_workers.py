"""The workspace controller's concurrency is its own setting, larger than the others'."""

from __future__ import annotations

import pytest

from kaito.operator import WORKSPACE_WORKERS, parse_args


def test_workspace_workers_default_apart_from_the_other_controllers() -> None:
    args = parse_args([])
    assert (args.workers, args.workspace_workers) == (20, WORKSPACE_WORKERS)
    args = parse_args(["--workers=4", "--workspace-workers=8"])
    assert (args.workers, args.workspace_workers) == (4, 8)


def test_workspace_workers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_WORKSPACE_WORKERS", "7")
    assert parse_args([]).workspace_workers == 7


@pytest.mark.parametrize("flag", ["--workers=0", "--workspace-workers=0"])
def test_fewer_than_one_worker_is_refused_by_name(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args([flag])
    assert f"{flag.partition('=')[0]} must be at least 1" in capsys.readouterr().err
