"""The demo workload's alarm storms and flapping link (telbus.demo) come out of the
correlator as its manifest says: one incident per storm root holding every symptom,
the right subscriber count, the flapping link marked flapping, no alarm lost."""

from collections import Counter

import pytest

from processors.alarms import correlate as C
from processors.alarms.correlate import Correlator
from processors.alarms.topology import Topology

demo = pytest.importorskip("telbus.demo")


@pytest.fixture(scope="module")
def run():
    w = demo.generate(seed=7, subscribers=300, cdrs=0, fraud=False, storms=3, flaps=2)
    topo = Topology()
    corr = Correlator(topology=topo)
    events, disp, raises = [], Counter(), []
    for topic, _key, ev in w.events:
        if topic == "oss.topology":
            topo.apply_ne(ev)
        elif topic == "bss.subscriber.events":
            topo.apply_subscriber(ev)
        elif topic == "oss.alarm.raw":
            if ev["severity"] != "CLEARED":
                raises.append(ev["alarm_id"])
            out = corr.process(ev)
            disp[out.disposition] += 1
            events.extend(out.events)
    placed = [(ev["event_time"], ev.get("access_ne_id")) for topic, _k, ev in w.events
              if topic == "bss.subscriber.events" and ev["event_type"] == "SubscriberCreated"]
    w.manifest["_placed"] = placed
    return w.manifest, events, disp, raises


def test_storms_become_one_incident_each(run):
    manifest, events, _disp, _raises = run
    assert len(manifest["storms"]) == 3
    for storm in manifest["storms"]:
        mine = [e for e in events if e["root_alarm_id"] == storm["root_alarm_id"]]
        assert [e["change"] for e in mine][0] == "OPENED"
        assert mine[-1]["change"] == "CLEARED"
        opened = mine[0]
        assert opened["root_ne_id"] == storm["root_ne_id"]
        assert opened["site_id"] == storm["site_id"]
        assert set(storm["symptom_alarm_ids"]) <= set(opened["alarm_ids"])
        # subscribers placed on the storm's ONUs when the root alarm came (the manifest
        # also counts later sign-ups)
        onus = set(storm["symptom_ne_ids"])
        at_the_time = sum(1 for t, ne in manifest["_placed"] if ne in onus and t <= storm["root_raised_ms"])
        assert opened["affected_subscribers"] == at_the_time <= storm["affected_subscribers"]
        merged = [e for e in events if e["change"] == "MERGED" and e["merged_into"] == opened["incident_id"]]
        assert len(merged) == len(storm["symptom_alarm_ids"])  # ONU alarms came first


def test_flapping_links_are_marked(run):
    manifest, events, _disp, _raises = run
    assert manifest["flapping"]
    for flap in manifest["flapping"]:
        mine = [e for e in events if e["root_ne_id"] == flap["ne_id"]]
        assert any(e["flapping"] for e in mine)
        assert not mine[0]["flapping"]


def test_no_alarm_lost_and_noise_deduplicated(run):
    _manifest, events, disp, raises = run
    last = {}
    for e in events:
        last[e["incident_id"]] = e
    listed = Counter(a for e in last.values() if e["change"] != "MERGED" for a in e["alarm_ids"])
    assert set(raises) <= set(listed)
    assert max(listed.values()) == 1
    assert disp[C.DEDUP] >= 1


def test_demo_report_section_matches_manifest(run):
    from processors.alarms.report import summarize

    manifest, events, _disp, _raises = run
    lines = summarize(events, manifest)
    assert not [line for line in lines if "MISMATCH" in line], lines
    assert sum("storm " in line and line.endswith("match") for line in lines) == 3
    assert sum("flapping " in line and "flagged" in line for line in lines) == 2
