"""View payloads and the lookup index (pure, no broker)."""
from processors.subscriptions import views

T0 = 1_790_000_000_000


def rec(sid="S1", version=1, bb="gd-bb-1", msisdn="13800000001", status="ACTIVE", t=T0, types=None):
    types = {"P-BB": "BROADBAND", "P-CON": "CONTENT", "P-SEC": "SECURITY", "P-VAS": "VAS"} if types is None else types
    return {"event_type": "SubscriptionState", "subscriber_id": sid, "msisdn": msisdn, "status": status,
            "plan_id": "PLAN-A", "payment_type": "POSTPAID", "broadband_account": bb, "broadband_type": "E8_1",
            "products": sorted(types), "version": version, "updated_at": t,
            "product_types": dict(sorted(types.items()))}


def test_ehome_view_has_account_type_and_products_with_types():
    v = views.ehome_view(rec())
    assert v["broadband_account"] == "gd-bb-1" and v["account_type"] == "E8_1"
    assert v["products"] == [{"product_id": "P-BB", "product_type": "BROADBAND"},
                             {"product_id": "P-CON", "product_type": "CONTENT"},
                             {"product_id": "P-SEC", "product_type": "SECURITY"},
                             {"product_id": "P-VAS", "product_type": "VAS"}]
    assert v["updated_at"] == "2026-09-21T14:13:20.000Z"


def test_vnet_view_filters_vas_and_content():
    v = views.vnet_view(rec())
    assert [p["product_id"] for p in v["subscriptions"]] == ["P-CON", "P-VAS"]
    assert {p["product_type"] for p in v["subscriptions"]} == {"VAS", "CONTENT"}


def test_ismp_view_lists_sorted_product_ids():
    v = views.ismp_view(rec(types={"Z": "VAS", "A": "BROADBAND", "M": "CONTENT"}))
    assert v["msisdn"] == "13800000001" and v["products"] == ["A", "M", "Z"]


def test_no_broadband_account_means_no_broadband_views():
    r = rec(bb=None)
    assert views.ehome_view(r) is None and views.vnet_view(r) is None and views.ismp_view(r) is not None


def test_index_lookup_404_and_key_changes():
    idx = views.ViewIndex()
    assert idx.lookup("ehome", "gd-bb-1") is None
    idx.upsert(rec())
    assert idx.lookup("ehome", "gd-bb-1")["subscriber_id"] == "S1"
    assert idx.lookup("ismp", "13800000001")["products"] == ["P-BB", "P-CON", "P-SEC", "P-VAS"]
    assert idx.lookup("vnet", "unknown") is None
    # broadband account changes: the old key disappears
    assert idx.upsert(rec(version=2, bb="gd-bb-2"))
    assert idx.lookup("ehome", "gd-bb-1") is None and idx.lookup("vnet", "gd-bb-2")["version"] == 2
    # older version re-read (topic replay): ignored
    assert not idx.upsert(rec(version=1))
    assert idx.lookup("ehome", "gd-bb-1") is None and len(idx) == 1


def test_index_shared_key_prefers_live_then_latest():
    idx = views.ViewIndex()
    idx.upsert(rec(sid="OLD", msisdn="139", t=T0 + 5, status="TERMINATED"))
    idx.upsert(rec(sid="NEW", msisdn="139", t=T0))
    assert idx.lookup("ismp", "139")["subscriber_id"] == "NEW"
    idx.upsert(rec(sid="NEWER", msisdn="139", t=T0 + 1))
    assert idx.lookup("ismp", "139")["subscriber_id"] == "NEWER"


def test_unknown_kind_raises():
    try:
        views.ViewIndex().lookup("bogus", "x")
    except KeyError:
        pass
    else:
        raise AssertionError("expected KeyError")
