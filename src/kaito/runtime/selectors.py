"""Label selectors: parsed once, matched locally (cache reads) and sent as strings (watches)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[^\s!=(),]+)")
_SET_OPS = {"in", "notin"}
_PUNCTUATION = {"(", ")", ",", "=", "==", "!=", "!"}


@dataclass(frozen=True, slots=True)
class Requirement:
    """One clause: ``key op values`` with op in =, !=, in, notin, exists, !exists."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # != and notin also match objects without the key, as in Kubernetes
        return not present or labels[self.key] not in self.values

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return f"!{self.key}"
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{next(iter(self.values))}"
        return f"{self.key} {self.op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True, slots=True)
class Selector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def equalities(self) -> list[tuple[str, str]]:
        """``key=value`` clauses, which an index can answer directly."""
        return [
            (r.key, next(iter(r.values)))
            for r in self.requirements
            if r.op == "=" or (r.op == "in" and len(r.values) == 1)
        ]

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


class SelectorError(ValueError):
    """A label selector that does not parse; the message says where."""


def parse_selector(text: str | Mapping[str, str] | Selector | None) -> Selector:
    """Parse the Kubernetes label-selector syntax (or take a ``{key: value}`` mapping)."""
    if text is None:
        return Selector()
    if isinstance(text, Selector):
        return text
    if isinstance(text, Mapping):
        return Selector(tuple(Requirement(k, "=", frozenset([v])) for k, v in text.items()))
    tokens = _TOKEN.findall(text)
    if "".join(tokens).replace(" ", "") != re.sub(r"\s+", "", text):
        raise SelectorError(f"cannot parse label selector {text!r}")
    reqs: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise SelectorError(f"label selector {text!r} ends too early")
        tok = tokens[i]
        i += 1
        return str(tok)

    while i < len(tokens):
        tok = take()
        if tok == "!":
            key = take()
            if key in _PUNCTUATION:
                raise SelectorError(f"expected a label key after '!' in {text!r}")
            reqs.append(Requirement(key, "!exists"))
        else:
            key = tok
            if key in _PUNCTUATION:
                raise SelectorError(f"expected a label key, got {key!r} in {text!r}")
            nxt = tokens[i] if i < len(tokens) else ","
            if nxt == ",":
                reqs.append(Requirement(key, "exists"))
            elif nxt in ("=", "==", "!="):
                take()
                op = "!=" if nxt == "!=" else "="
                reqs.append(Requirement(key, op, frozenset([take()])))
            elif nxt in _SET_OPS:
                take()
                if take() != "(":
                    raise SelectorError(f"expected '(' after {nxt!r} in {text!r}")
                values: set[str] = set()
                while True:
                    v = take()
                    if v == ")":
                        break
                    if v != ",":
                        values.add(v)
                reqs.append(Requirement(key, nxt, frozenset(values)))
            else:
                raise SelectorError(f"unexpected {nxt!r} after {key!r} in label selector {text!r}")
        if i < len(tokens):
            if tokens[i] != ",":
                raise SelectorError(f"expected ',' at {tokens[i]!r} in label selector {text!r}")
            i += 1
    return Selector(tuple(reqs))


def match_fields(selector: str | None, obj: Mapping[str, Any]) -> bool:
    """Local check of the common field selectors (``metadata.name``/``metadata.namespace``)."""
    if not selector:
        return True
    meta = obj.get("metadata") or {}
    for clause in selector.split(","):
        neg = "!=" in clause
        key, _, value = clause.replace("!=", "=").replace("==", "=").partition("=")
        path = key.strip().split(".")
        cur: Any = obj if path[0] != "metadata" else {"metadata": meta}
        for part in path:
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        equal = str(cur if cur is not None else "") == value.strip()
        if equal == neg:
            return False
    return True
