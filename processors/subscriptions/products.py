"""Provisioning catalog: which platforms a product's order items are provisioned on.

The order state machine uses it to know, at submit time, which work orders an order will
get (one per distinct target system of its items):

* every item's product is in the catalog and none has a target -> the order has no work
  order and completes on submit (CONTRACT §4);
* otherwise, when every product is known, the order completes only once work orders for
  all expected target systems were dispatched and all dispatched ones succeeded (a work
  order completing before its sibling is dispatched does not complete the order early);
* an order with a product missing from the catalog falls back to the contract's literal
  rule: COMPLETED when every dispatched work order succeeded (it waits for a first one).

The catalog is data, overridable per deployment (``Limits.product_targets``); this default
is the operator's product set used by the demo workload (telbus.demo builds its work orders
from the same targets).
"""
from __future__ import annotations

#: product_id -> target systems of its work orders (empty: no provisioning needed)
DEFAULT_PRODUCT_TARGETS: dict[str, tuple[str, ...]] = {
    "VAS-CRBT": ("ISMP",),
    "VAS-CLIP": ("SOFTSWITCH",),
    "VAS-MCA": ("ISMP",),
    "VAS-SMS-100": ("SMSC",),
    "VAS-189MAIL": ("ISMP",),
    "VAS-BILL-REMINDER": (),
    "BROADBAND-300M": ("AAA", "BAC"),
    "BROADBAND-500M": ("AAA", "BAC"),
    "BROADBAND-1000M": ("AAA", "BAC"),
    "EHOME-VOIP-FIXED": ("SOFTSWITCH", "EHOME"),
    "EHOME-VOIP-VIDEO": ("SOFTSWITCH", "EHOME"),
    "SECURITY-GREEN-NET": ("VNET",),
    "SECURITY-ANTI-FRAUD": (),
    "SECURITY-HOME-GUARD": ("EHOME", "VNET"),
    "CONTENT-IPTV-BASIC": ("EHOME",),
    "CONTENT-IPTV-4K": ("EHOME",),
    "CONTENT-TIANYI-VIDEO": ("VNET", "ISMP"),
    "CONTENT-MUSIC": ("ISMP",),
    "CONTENT-CLOUD-GAME": ("VNET",),
}


def expected_targets(items, catalog) -> list | None:
    """Sorted target systems an order's items need, or None if a product is not catalogued."""
    targets = set()
    for it in items:
        t = catalog.get(it["product_id"])
        if t is None:
            return None
        targets.update(t)
    return sorted(targets)
