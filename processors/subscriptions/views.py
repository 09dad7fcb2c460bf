"""Downstream view payloads (pure).

Input: a *view record* = a SubscriptionState dict plus ``product_types``
({product_id: product_type}), as produced by :func:`processors.subscriptions.state.view_record`
(SubscriptionState itself carries product ids only; the types come from the orders).

* ``GET /views/ehome/{broadband_account}``: account type (broadband_type) and every product
  with its type, for the e-Home client back end.
* ``GET /views/vnet/{broadband_account}``: VAS and CONTENT subscriptions, for ChinaVnet.
* ``GET /views/ismp/{msisdn}``: ordered product ids (sorted), for ISMP.

Timestamps are written ISO-8601 UTC (``...Z``) as every JSON output of the project.

:class:`ViewIndex` keeps the latest view record per subscriber and answers lookups by
broadband account / msisdn.  When several subscribers share a key (a recycled msisdn, a
shared broadband account) the answer is deterministic: a subscriber that is not
TERMINATED first, then the latest ``updated_at``, then the greatest subscriber_id.
Records older than what the index holds (lower version) are ignored, so re-reading a
topic from the beginning is idempotent.
"""
from __future__ import annotations

from datetime import datetime, timezone

VNET_TYPES = ("VAS", "CONTENT")
KINDS = ("ehome", "vnet", "ismp")


def iso_utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _products(rec: dict, types=None) -> list:
    pt = rec.get("product_types") or {}
    return [{"product_id": p, "product_type": pt.get(p)}
            for p in sorted(rec["products"]) if types is None or pt.get(p) in types]


def ehome_view(rec: dict) -> dict | None:
    if not rec.get("broadband_account"):
        return None
    return {
        "broadband_account": rec["broadband_account"],
        "account_type": rec["broadband_type"],
        "subscriber_id": rec["subscriber_id"],
        "msisdn": rec.get("msisdn"),
        "status": rec["status"],
        "payment_type": rec.get("payment_type"),
        "plan_id": rec.get("plan_id"),
        "products": _products(rec),
        "version": rec["version"],
        "updated_at": iso_utc(rec["updated_at"]),
    }


def vnet_view(rec: dict) -> dict | None:
    if not rec.get("broadband_account"):
        return None
    return {
        "broadband_account": rec["broadband_account"],
        "subscriber_id": rec["subscriber_id"],
        "status": rec["status"],
        "subscriptions": _products(rec, VNET_TYPES),
        "version": rec["version"],
        "updated_at": iso_utc(rec["updated_at"]),
    }


def ismp_view(rec: dict) -> dict | None:
    if not rec.get("msisdn"):
        return None
    return {
        "msisdn": rec["msisdn"],
        "subscriber_id": rec["subscriber_id"],
        "status": rec["status"],
        "products": sorted(rec["products"]),
        "version": rec["version"],
        "updated_at": iso_utc(rec["updated_at"]),
    }


RENDER = {"ehome": ehome_view, "vnet": vnet_view, "ismp": ismp_view}


def view_key(kind: str, rec: dict) -> str | None:
    return rec.get("msisdn") if kind == "ismp" else rec.get("broadband_account")


def _rank(rec: dict):
    return (rec["status"] != "TERMINATED", rec.get("updated_at") or 0, rec["subscriber_id"])


class ViewIndex:
    """Latest view record per subscriber, indexed by broadband account and msisdn."""

    def __init__(self):
        self.by_subscriber: dict[str, dict] = {}
        self._by_bb: dict[str, set] = {}
        self._by_msisdn: dict[str, set] = {}

    def _unindex(self, rec: dict) -> None:
        for idx, key in ((self._by_bb, rec.get("broadband_account")), (self._by_msisdn, rec.get("msisdn"))):
            if key and key in idx:
                idx[key].discard(rec["subscriber_id"])
                if not idx[key]:
                    del idx[key]

    def upsert(self, rec: dict) -> bool:
        """Take a view record; returns False when it is not newer than what is held."""
        sid = rec["subscriber_id"]
        old = self.by_subscriber.get(sid)
        if old is not None:
            if old["version"] >= rec["version"]:
                return False
            self._unindex(old)
        self.by_subscriber[sid] = rec
        if rec.get("broadband_account"):
            self._by_bb.setdefault(rec["broadband_account"], set()).add(sid)
        if rec.get("msisdn"):
            self._by_msisdn.setdefault(rec["msisdn"], set()).add(sid)
        return True

    def record_for(self, kind: str, key: str) -> dict | None:
        if kind not in KINDS:
            raise KeyError(kind)
        idx = self._by_msisdn if kind == "ismp" else self._by_bb
        sids = idx.get(key)
        if not sids:
            return None
        return max((self.by_subscriber[s] for s in sids), key=_rank)

    def lookup(self, kind: str, key: str) -> dict | None:
        """The view payload, or None (-> HTTP 404) for an unknown key."""
        rec = self.record_for(kind, key)
        return None if rec is None else RENDER[kind](rec)

    def __len__(self) -> int:
        return len(self.by_subscriber)
