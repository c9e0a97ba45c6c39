"""The registry of claims. Claims live in folders that mirror the library's fields (``claims/optim/soap.py``);
every module registers its claims when imported, and all of them are imported on the first lookup, so adding a
claim means adding a module. Lookups list claims sorted by key, whatever the import order."""

from __future__ import annotations

import importlib
import pkgutil

from thrifty.bench.claim import Claim

__all__ = ["UnknownClaimError", "all_claims", "default_claims", "get_claim", "register"]

_REGISTRY: dict[str, Claim] = {}
_loaded = False


class UnknownClaimError(KeyError):
    """Raised for a claim key that is not registered; the message lists the valid keys."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def register(claim: Claim) -> Claim:
    """Add a claim to the registry; keys are unique."""
    if claim.key in _REGISTRY and _REGISTRY[claim.key] is not claim:
        raise ValueError(f"claim {claim.key!r} is registered twice")
    _REGISTRY[claim.key] = claim
    return claim


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in sorted(m.name for m in pkgutil.walk_packages(__path__, prefix=f"{__name__}.")):
            importlib.import_module(module)
        _loaded = True


def all_claims() -> dict[str, Claim]:
    """Every registered claim by key, sorted by key."""
    _load()
    return dict(sorted(_REGISTRY.items()))


def default_claims() -> list[Claim]:
    """The curated default suite of ``thrifty bench``."""
    return [c for c in all_claims().values() if c.default]


def get_claim(key: str) -> Claim:
    claims = all_claims()
    try:
        return claims[key]
    except KeyError:
        raise UnknownClaimError(f"unknown claim {key!r}; valid claims: {', '.join(claims)}") from None
