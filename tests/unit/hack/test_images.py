"""hack/images' pruning: which local builds go (pure; no buildah)."""

from __future__ import annotations

from hack import images


def entry(tag: str, created: int) -> dict[str, object]:
    return {"names": [f"localhost/kaito-py/serving:{tag}"], "created": created}


def test_another_checkouts_recent_build_is_kept() -> None:
    """Before: every other build of the image went, so a second checkout's build removed the
    one this checkout was about to push (skopeo: "image not known")."""
    listing = [entry("mine", 100), entry("other-branch", 90), entry("operator", 95)]
    listing[2]["names"] = ["localhost/kaito-py/operator:x"]
    assert images.stale_builds(listing, "serving", "localhost/kaito-py/serving:mine") == []


def test_only_the_newest_few_builds_stay() -> None:
    listing = [entry(f"t{i}", i) for i in range(6)] + [entry("keep", 0)]
    stale = images.stale_builds(listing, "serving", "localhost/kaito-py/serving:keep")
    assert stale == ["localhost/kaito-py/serving:t2", "localhost/kaito-py/serving:t1",
                     "localhost/kaito-py/serving:t0"]  # fmt: skip
