"""Topology registry and subscriber placement used by alarm correlation."""

import json

import pytest

from processors.alarms.topology import Topology, TopologyError

T0 = 1_795_000_000_000


def ne(ne_id, parent=None, site="S1", services=("BROADBAND",), t=T0, ne_type="ONU"):
    return {
        "event_type": "NetworkElement",
        "event_id": f"ne-{ne_id}-{t}",
        "event_time": t,
        "source": "NMS-HW",
        "ne_id": ne_id,
        "ne_type": ne_type,
        "parent_ne_id": parent,
        "site_id": site,
        "services": list(services),
    }


def sub(sub_id, access, t=T0):
    return {
        "event_type": "SubscriberCreated",
        "event_id": f"sub-{sub_id}-{t}",
        "event_time": t,
        "source": "CRM-GD",
        "subscriber_id": sub_id,
        "msisdn": "13800000000",
        "account_id": "A1",
        "home_province": "GD",
        "payment_type": "PREPAID",
        "plan_id": "P1",
        "real_name": "x",
        "id_number": "y",
        "broadband_type": "E8_1",
        "access_ne_id": access,
    }


@pytest.fixture
def topo():
    t = Topology()
    t.apply_ne(ne("R1", None, "CORE", ("IP",), ne_type="ROUTER"))
    t.apply_ne(ne("OLT1", "R1", "AGG", ("BROADBAND", "IPTV"), ne_type="OLT"))
    t.apply_ne(ne("OLT2", "R1", "AGG", ("VOICE",), ne_type="OLT"))
    for i in range(3):
        t.apply_ne(ne(f"ONU{i}", "OLT1", f"S{i}"))
    t.apply_ne(ne("ONU9", "OLT2", "S9"))
    return t


def test_parent_chain_and_subtree(topo):
    assert topo.ancestors("ONU1") == ["OLT1", "R1"]
    assert topo.ancestors("R1") == []
    assert topo.ancestors("NOPE") == []
    assert topo.subtree("OLT1") == {"OLT1", "ONU0", "ONU1", "ONU2"}
    assert topo.subtree("R1") == {"R1", "OLT1", "OLT2", "ONU0", "ONU1", "ONU2", "ONU9"}
    assert topo.subtree("ONU0") == {"ONU0"}


def test_services_union_sorted(topo):
    assert topo.subtree_services("OLT1") == ["BROADBAND", "IPTV"]
    assert topo.subtree_services("R1") == ["BROADBAND", "IP", "IPTV", "VOICE"]
    assert topo.subtree_services("UNKNOWN") == []


def test_reparenting_moves_subtree(topo):
    assert "ONU2" in topo.subtree("OLT1")
    assert topo.apply_ne(ne("ONU2", "OLT2", "S2", t=T0 + 1))
    assert topo.ancestors("ONU2") == ["OLT2", "R1"]
    assert "ONU2" not in topo.subtree("OLT1")
    assert "ONU2" in topo.subtree("OLT2")
    assert topo.children["OLT1"] == ["ONU0", "ONU1"]


def test_stale_ne_version_ignored(topo):
    topo.apply_ne(ne("ONU2", "OLT2", "S2", t=T0 + 10))
    assert not topo.apply_ne(ne("ONU2", "OLT1", "S2", t=T0 + 5))
    assert topo.parent("ONU2") == "OLT2"
    # same version re-delivered: idempotent
    assert topo.apply_ne(ne("ONU2", "OLT2", "S2", t=T0 + 10))
    assert topo.children["OLT2"] == ["ONU2", "ONU9"]


def test_cycle_is_safe(topo):
    topo.apply_ne(ne("R1", "ONU0", "CORE", ("IP",), t=T0 + 1, ne_type="ROUTER"))
    chain = topo.ancestors("ONU1")
    assert chain == ["OLT1", "R1", "ONU0"]
    assert topo.subtree("OLT1") == topo.subtree("R1")


def test_self_parent_rejected(topo):
    with pytest.raises(TopologyError):
        topo.apply_ne(ne("X", "X"))


@pytest.mark.parametrize(
    "patch",
    [{"ne_id": None}, {"site_id": ""}, {"event_time": "now"}, {"services": "IP"}, {"parent_ne_id": 5}],
)
def test_malformed_ne_rejected(patch):
    bad = {**ne("X"), **patch}
    with pytest.raises(TopologyError):
        Topology().apply_ne(bad)


def test_unknown_parent_keeps_children(topo):
    topo.apply_ne(ne("ONU7", "OLT-NEW", "S7"))
    assert not topo.known("OLT-NEW")
    assert topo.subtree("OLT-NEW") == {"OLT-NEW", "ONU7"}


def test_remove_ne(topo):
    assert topo.remove_ne("ONU0")
    assert not topo.known("ONU0")
    assert "ONU0" not in topo.subtree("OLT1")
    assert not topo.remove_ne("ONU0")


def test_subscriber_counts_and_move(topo):
    for i in range(5):
        topo.apply_subscriber(sub(f"U{i}", "ONU0"))
    topo.apply_subscriber(sub("U9", "ONU9"))
    topo.apply_subscriber(sub("U-none", None))
    assert topo.subtree_subscribers("OLT1") == 5
    assert topo.subtree_subscribers("R1") == 6
    # a later event moves one subscriber: the count moves with it
    assert topo.apply_subscriber(sub("U0", "ONU9", t=T0 + 1000))
    assert topo.subtree_subscribers("OLT1") == 4
    assert topo.subtree_subscribers("OLT2") == 2
    assert topo.subtree_subscribers("R1") == 6
    # an older event arriving late does not move it back
    assert not topo.apply_subscriber(sub("U0", "ONU0", t=T0 + 500))
    assert topo.subtree_subscribers("OLT1") == 4
    # moved to no NE at all
    topo.apply_subscriber(sub("U1", None, t=T0 + 2000))
    assert topo.subtree_subscribers("OLT1") == 3
    assert "ONU0" in topo.subs_per_ne


def test_subscriber_on_reparented_ne_counts_in_new_subtree(topo):
    topo.apply_subscriber(sub("U1", "ONU1"))
    assert topo.subtree_subscribers("OLT1") == 1
    topo.apply_ne(ne("ONU1", "OLT2", "S1", t=T0 + 1))
    assert topo.subtree_subscribers("OLT1") == 0
    assert topo.subtree_subscribers("OLT2") == 1


def test_other_subscriber_events_ignored(topo):
    assert not topo.apply_subscriber({"event_type": "PlanChanged", "subscriber_id": "U1"})


def test_state_is_json_round_trippable(topo):
    topo.apply_subscriber(sub("U1", "ONU1"))
    data = json.loads(json.dumps(topo.to_dict()))
    again = Topology.from_dict(data)
    assert again.subtree("OLT1") == topo.subtree("OLT1")
    assert again.subtree_subscribers("OLT1") == 1
    assert again.subtree_services("R1") == topo.subtree_services("R1")
