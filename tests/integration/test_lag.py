"""telbus.lag against a real broker: committed vs high watermark, without joining the group."""
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from telbus import kafka, lag, metrics
from tests.helpers import unique


def test_lag_per_partition_and_gauges(broker):
    topic = unique("lag.test.")
    admin = kafka.admin()
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    p = kafka.producer()
    for i in range(10):
        p.produce(topic, b"v", b"k", partition=i % 2)  # 5 records per partition
    assert p.flush(30) == 0
    group = unique("lag-group-")
    c = kafka.consumer(group)
    c.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)  # partition 1: nothing committed
    c.close()

    res = lag.compute(group, [topic, "no.such.topic." + unique()])
    assert res[(topic, 0)] == {"committed": 3, "low": 0, "high": 5, "lag": 2}
    assert res[(topic, 1)]["lag"] == 5 and res[(topic, 1)]["committed"] is None

    col = lag.LagCollector(group, [topic], interval=0.2)
    col.collect_once()
    assert metrics.CONSUMER_LAG.labels(group, topic, "0")._value.get() == 2
    assert metrics.TOPIC_END_OFFSET.labels(topic, "1")._value.get() == 5
    col.start()
    col.stop()
    groups = admin.describe_consumer_groups([group])[group].result(30)
    assert not groups.members  # the collector never joined
