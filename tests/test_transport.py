"""Publisher and Subscriber over real ZeroMQ sockets on 127.0.0.1 and ipc://.

Every test binds its publishers on a free port (``tcp://127.0.0.1:0``) or an
ipc path under ``tmp_path``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline.transport import Publisher, Subscriber, TopicSpec

FREE_TCP = "tcp://127.0.0.1:0"


def alerts_spec(**fields: object) -> TopicSpec:
    return TopicSpec(name="alerts", endpoint=FREE_TCP, **{"policy": "all", **fields})


def receive_texts(subscriber: Subscriber, count: int, publishers: list[Publisher] = (), timeout_s: float = 5.0) -> list[str]:
    """Receive ``count`` alerts, serving the publishers' subscription events meanwhile."""
    texts: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(texts) < count and time.monotonic() < deadline:
        for publisher in publishers:
            publisher.poll(0)
        message = subscriber.recv(timeout_s=0.05)
        if message is not None:
            texts.append(message.text)
    return texts


def nothing_more(subscriber: Subscriber, publishers: list[Publisher] = (), wait_s: float = 0.3) -> bool:
    """Return True when no further message arrives within ``wait_s`` seconds."""
    return receive_texts(subscriber, 1, publishers, timeout_s=wait_s) == []


def bind_retrying(spec: TopicSpec, source: str, timeout_s: float = 3.0) -> Publisher:
    """Bind a publisher, retrying while the previous owner of the endpoint releases it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return Publisher(spec, source=source)
        except zmq.ZMQError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_gaps_counted_per_publisher() -> None:
    first = Publisher(alerts_spec(), source="north")
    second = Publisher(alerts_spec(), source="south")
    subscriber = Subscriber([first.spec], connect={"alerts": [second.spec.endpoint]})
    try:
        assert first.wait_for_subscribers(1, timeout_s=5.0)
        assert second.wait_for_subscribers(1, timeout_s=5.0)

        first.send_alert("n0")
        second.send_alert("s0")
        first.seq += 2  # seq 1 and 2 of north are lost at the sender
        first.send_alert("n3")
        second.seq += 5  # seq 1 to 5 of south are lost
        second.send_alert("s6")
        first.send_alert("n4")
        texts = receive_texts(subscriber, 5)

        assert sorted(texts) == ["n0", "n3", "n4", "s0", "s6"]
        assert subscriber.stats["alerts"].gaps == 7
        assert subscriber.stats["alerts"].delivered == 5
    finally:
        subscriber.close()
        first.close()
        second.close()


def test_publisher_restart_resets_tracking(tmp_path: Path) -> None:
    spec = TopicSpec(name="alerts", endpoint=f"ipc://{tmp_path}/alerts.sock", policy="all")
    publisher = Publisher(spec, source="alerts")
    subscriber = Subscriber([spec])
    try:
        assert publisher.wait_for_subscribers(1, timeout_s=5.0)
        for index in range(5):
            publisher.send_alert(f"before {index}")
        assert receive_texts(subscriber, 5) == [f"before {index}" for index in range(5)]
        old_session = publisher.session
        publisher.close()

        publisher = bind_retrying(spec, source="alerts")
        assert publisher.session != old_session
        assert publisher.wait_for_subscribers(1, timeout_s=5.0)
        for index in range(3):
            publisher.send_alert(f"after {index}")
        texts = receive_texts(subscriber, 3)

        assert texts == ["after 0", "after 1", "after 2"]
        stats = subscriber.stats["alerts"]
        assert stats.gaps == 0
        assert stats.duplicates == 0
        assert stats.delivered == 8
    finally:
        subscriber.close()
        publisher.close()


def test_transient_local_replays_to_late_subscriber() -> None:
    publisher = Publisher(alerts_spec(durability="transient_local", history=16), source="alerts")
    try:
        for index in range(5):
            publisher.send_alert(f"early {index}")
        assert publisher.subscribers == 0

        with Subscriber([publisher.spec]) as subscriber:
            early = receive_texts(subscriber, 5, [publisher])
            publisher.send_alert("live")
            live = receive_texts(subscriber, 1, [publisher])

            assert early == [f"early {index}" for index in range(5)]
            assert live == ["live"]
            assert nothing_more(subscriber, [publisher])
            assert subscriber.stats["alerts"].gaps == 0
            assert subscriber.stats["alerts"].delivered == 6
    finally:
        publisher.close()


def test_transient_local_two_subscribers_each_once() -> None:
    publisher = Publisher(alerts_spec(durability="transient_local", history=16), source="alerts")
    first = second = None
    try:
        for index in range(3):
            publisher.send_alert(f"early {index}")
        first = Subscriber([publisher.spec])
        assert receive_texts(first, 3, [publisher]) == ["early 0", "early 1", "early 2"]
        publisher.send_alert("between")

        second = Subscriber([publisher.spec])
        second_texts = receive_texts(second, 4, [publisher])
        publisher.send_alert("last")
        first_texts = receive_texts(first, 2, [publisher])
        second_last = receive_texts(second, 1, [publisher])

        assert second_texts == ["early 0", "early 1", "early 2", "between"]
        assert second_last == ["last"]
        assert first_texts == ["between", "last"]
        assert nothing_more(first, [publisher])
        assert nothing_more(second, [publisher])
        # The replay for the second subscriber reaches the first one too and is dropped there.
        assert first.stats["alerts"].duplicates == 4
        assert first.stats["alerts"].delivered == 5
        assert second.stats["alerts"].delivered == 5
    finally:
        for subscriber in (first, second):
            if subscriber is not None:
                subscriber.close()
        publisher.close()


def test_transient_local_history_overflow_counts_gap() -> None:
    publisher = Publisher(alerts_spec(durability="transient_local", history=3), source="alerts")
    try:
        for index in range(5):
            publisher.send_alert(f"early {index}")

        with Subscriber([publisher.spec]) as subscriber:
            texts = receive_texts(subscriber, 3, [publisher])

            assert texts == ["early 2", "early 3", "early 4"]
            assert subscriber.stats["alerts"].gaps == 2
    finally:
        publisher.close()


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_endpoint_scheme_delivers(scheme: str, tmp_path: Path) -> None:
    endpoint = FREE_TCP if scheme == "tcp" else f"ipc://{tmp_path}/sub dir/alerts.sock"
    publisher = Publisher(TopicSpec(name="alerts", endpoint=endpoint), source="alerts")
    try:
        with Subscriber([publisher.spec]) as subscriber:
            assert publisher.wait_for_subscribers(1, timeout_s=5.0)
            publisher.send_alert(f"over {scheme}")

            assert receive_texts(subscriber, 1) == [f"over {scheme}"]
    finally:
        publisher.close()
    if scheme == "tcp":
        assert publisher.spec.endpoint.startswith("tcp://127.0.0.1:")
        assert not publisher.spec.endpoint.endswith(":0")


def test_bind_twice_raises_with_topic() -> None:
    publisher = Publisher(alerts_spec(), source="alerts")
    try:
        with pytest.raises(zmq.ZMQError, match="cannot bind topic 'alerts'"):
            Publisher(publisher.spec, source="other")
    finally:
        publisher.close()


def test_all_policy_delivers_everything_within_queue() -> None:
    publisher = Publisher(TopicSpec(name="camera", endpoint=FREE_TCP, policy="all", queue=1000), source="cam")
    image = np.zeros((32, 32, 3), np.uint8)
    try:
        with Subscriber([publisher.spec]) as subscriber:
            assert publisher.wait_for_subscribers(1, timeout_s=5.0)
            for _ in range(500):
                publisher.send_frame(image, encoding="bgr8")
            time.sleep(0.3)  # the consumer is late: everything is queued before the first recv
            seqs = []
            while (message := subscriber.recv(timeout_s=1.0)) is not None:
                seqs.append(message.header.seq)

            assert seqs == list(range(500))
            assert subscriber.stats["camera"].gaps == 0
            assert subscriber.stats["camera"].dropped == 0
    finally:
        publisher.close()


def test_all_policy_beyond_queue_counts_gaps() -> None:
    queue = 20
    publisher = Publisher(TopicSpec(name="camera", endpoint=FREE_TCP, policy="all", queue=queue), source="cam")
    image = np.zeros((128, 128, 3), np.uint8)  # 48 KiB, so 600 frames overflow the socket buffers
    try:
        with Subscriber([publisher.spec]) as subscriber:
            assert publisher.wait_for_subscribers(1, timeout_s=5.0)
            for _ in range(600):
                publisher.send_frame(image, encoding="bgr8")
            time.sleep(0.3)
            seqs = []
            while (message := subscriber.recv(timeout_s=1.0)) is not None:
                seqs.append(message.header.seq)
            stats = subscriber.stats["camera"]

            assert seqs[:queue] == list(range(queue))
            assert seqs == sorted(set(seqs))
            assert len(seqs) < 400
            assert stats.gaps == seqs[-1] + 1 - len(seqs)
            assert stats.stale_dropped == 0
    finally:
        publisher.close()


def test_latest_policy_slow_consumer_gets_fresh_frames() -> None:
    period_s = 0.02
    publisher = Publisher(TopicSpec(name="camera", endpoint=FREE_TCP, policy="latest"), source="cam")
    image = np.zeros((120, 160, 3), np.uint8)
    stop = threading.Event()

    def publish() -> None:
        start = time.monotonic()
        while not stop.is_set() and publisher.seq < 100:
            publisher.send_frame(image, encoding="bgr8")
            time.sleep(max(0.0, start + publisher.seq * period_s - time.monotonic()))

    subscriber = Subscriber([publisher.spec])
    thread = threading.Thread(target=publish)
    try:
        assert publisher.wait_for_subscribers(1, timeout_s=5.0)
        thread.start()
        seqs, lags = [], []
        while (message := subscriber.recv(timeout_s=1.0)) is not None:
            newest = publisher.seq - 1  # read right after recv: newest frame already sent
            seqs.append(message.header.seq)
            lags.append(newest - message.header.seq)
            time.sleep(0.1)  # five frame periods of work per frame
        thread.join()
        stats = subscriber.stats["camera"]

        assert seqs[-1] == 99
        assert seqs == sorted(set(seqs))
        assert max(lags) <= 1, f"a delivered frame was {max(lags)} frames older than the newest sent"
        assert len(seqs) < 40
        assert stats.dropped == seqs[-1] + 1 - len(seqs)
        assert stats.delivered == len(seqs)
    finally:
        stop.set()
        subscriber.close()
        publisher.close()


SLOW_SUBSCRIBER = textwrap.dedent(
    """
    import sys, time
    from pipeline.transport import Subscriber, TopicSpec
    subscriber = Subscriber([TopicSpec(name="camera", endpoint=sys.argv[1], policy="all", queue=5)])
    print("subscribed", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("subscriber_fate", ["killed", "stopped"])
def test_close_after_subscriber_died_is_quick(subscriber_fate: str) -> None:
    context = zmq.Context()
    publisher = Publisher(TopicSpec(name="camera", endpoint=FREE_TCP, policy="all", queue=5), source="cam", context=context)
    process = subprocess.Popen([sys.executable, "-c", SLOW_SUBSCRIBER, publisher.spec.endpoint], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "subscribed"
        assert publisher.wait_for_subscribers(1, timeout_s=5.0)
        if subscriber_fate == "killed":
            process.kill()
            process.wait(5.0)
        else:
            os.kill(process.pid, signal.SIGSTOP)
        image = np.zeros((256, 256, 3), np.uint8)
        for _ in range(200):
            publisher.send_frame(image, encoding="bgr8")

        started = time.monotonic()
        publisher.close()
        context.term()
        elapsed_s = time.monotonic() - started

        assert elapsed_s < 1.0
    finally:
        if process.poll() is None:
            process.kill()
            os.kill(process.pid, signal.SIGCONT)
            process.wait(5.0)
