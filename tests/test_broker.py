"""The embedded Apache Kafka broker: start/stop by PID, status, topics, offsets, durability."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic, OffsetSpec

from pipelines.config import load_settings
from pipelines.kafka.broker import BrokerError, BrokerHandle, EmbeddedBroker, wait_until_healthy
from pipelines.kafka.topics import ensure_topics, resolve_bootstrap_servers
from pipelines.platform.processes import free_port, pid_alive

pytestmark = pytest.mark.integration


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp{,6}) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().upper().splitlines()[1:]:
            local, _remote, state = line.split()[1:4]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


# 127.0.0.1 as an IPv4 socket or as an IPv4-mapped IPv6 one (Java's default on dual-stack hosts)
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


def _listening_on_loopback(port: int) -> bool:
    addresses = _listening_addresses(port)
    return bool(addresses) and addresses <= LOOPBACK


def _our_kafka_processes(state_dir: Path) -> list[int]:
    """PIDs of Kafka JVMs started for ``state_dir`` (found to *check* that none is left, never to signal)."""
    properties = str(state_dir.resolve() / "server.properties")
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "kafka.Kafka" in argv and properties in argv:
                pids.append(int(entry.name))
    return pids


def _partition_count(admin: AdminClient, topic: str, expected: int, timeout_s: float = 15.0) -> int:
    """The topic's partition count once metadata shows ``expected`` (it reaches brokers asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def _topic(admin: AdminClient, partitions: int) -> str:
    name = f"t.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
    assert _partition_count(admin, name, partitions) == partitions
    return name


def _produce(bootstrap_servers: str, topic: str, counts: dict[int, int]) -> None:
    """``counts[p]`` messages into partition p, value ``p:n``; every one acknowledged by the broker."""
    producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all", "enable.idempotence": True})
    for partition, count in counts.items():
        for n in range(count):
            producer.produce(topic, value=f"{partition}:{n}".encode(), partition=partition)
    assert producer.flush(30) == 0


def _retry(call, timeout_s: float = 30.0):
    """Retry while the group coordinator is still loading (right after a broker start)."""
    retriable = {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            if exc.args[0].code() not in retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- the session broker (tests/conftest.py) -----------------------------------------------------


def test_session_broker_status(broker: BrokerHandle, tmp_session_dir: Path) -> None:
    state = tmp_session_dir / "broker"
    embedded = EmbeddedBroker(state)
    assert embedded.running() == broker, "broker.json records the running broker"
    assert embedded.start() == broker, "start is idempotent: no second process"
    assert _our_kafka_processes(state) == [broker.pid]
    record = json.loads((state / "broker.json").read_text())
    assert record["pid"] == broker.pid and record["port"] == broker.port
    assert record["controller_port"] == broker.controller_port != broker.port
    # both listeners on loopback only, and the advertised address is the loopback one
    assert _listening_on_loopback(broker.port) and _listening_on_loopback(broker.controller_port)
    assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    properties = (state / "server.properties").read_text()
    assert f"controller.quorum.voters=1@127.0.0.1:{broker.controller_port}" in properties
    assert f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker.port}" in properties
    # a formatted, on-disk log dir and a log file
    assert (Path(broker.data_dir) / "meta.properties").exists()
    assert Path(broker.log_file).exists()
    wait_until_healthy(broker.bootstrap_servers, timeout_s=5)


def test_topics_created_from_config(broker, settings) -> None:
    topics = ensure_topics(settings, broker.bootstrap_servers)
    for name, spec in settings.kafka.topics.items():
        assert topics[name] == spec.partitions
    assert topics[settings.kafka.dead_letter_topic] == 1
    assert ensure_topics(settings, broker.bootstrap_servers) == topics, "second call is a no-op"
    listed = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=5).topics
    assert set(topics) <= set(listed)


def test_topic_partition_counts_and_create_partitions(broker: BrokerHandle) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    name = _topic(admin, partitions=3)
    admin.create_partitions([NewPartitions(name, 5)])[name].result(30)
    assert _partition_count(admin, name, 5) == 5
    _produce(broker.bootstrap_servers, name, {4: 2})  # the new partition takes writes


def test_list_offsets_latest_on_multi_partition_topic(broker: BrokerHandle) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    name = _topic(admin, partitions=4)
    counts = {0: 3, 1: 17, 2: 0, 3: 250}
    _produce(broker.bootstrap_servers, name, counts)
    partitions = [TopicPartition(name, p) for p in counts]
    latest = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions})
    earliest = admin.list_offsets({tp: OffsetSpec.earliest() for tp in partitions})
    assert {tp.partition: future.result(10).offset for tp, future in latest.items()} == counts
    assert {tp.partition: future.result(10).offset for tp, future in earliest.items()} == dict.fromkeys(counts, 0)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": f"g.{name}"})
    try:
        assert [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions] == list(counts.values())
    finally:
        consumer.close()


# --- state file, config and failures (no JVM, or one that fails fast) -----------------------------


def test_stale_or_foreign_state_file_is_never_signalled(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    broker = EmbeddedBroker(state)
    record = {"port": 1, "controller_port": 2, "log_file": "x", "data_dir": "y"}
    # a PID that cannot exist (pid_max is below 2**22 on Linux)
    (state / "broker.json").write_text(json.dumps({"pid": 4194303, **record}))
    assert broker.running() is None
    assert not (state / "broker.json").exists(), "a stale record is removed"
    # a live PID that is not this broker's JVM (a reused PID): this very test process
    (state / "broker.json").write_text(json.dumps({"pid": os.getpid(), **record}))
    assert broker.running() is None
    assert broker.stop() is False
    # a record from the former Tansu broker: not ours either
    legacy = {"pid": os.getpid(), "port": 1, "storage": "memory", "log_file": "x"}
    (state / "broker.json").write_text(json.dumps(legacy))
    assert broker.running() is None
    assert broker.stop() is False


def test_settings_reach_the_broker(tmp_path: Path) -> None:
    settings = load_settings(
        "local",
        environ={
            "LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(tmp_path / "state"),
            "LAKEHOUSE__EMBEDDED_BROKER__HEAP": "256m",
        },
    )
    broker = EmbeddedBroker.from_settings(settings)
    assert broker.state_dir == (tmp_path / "state").resolve()
    assert broker.heap == "256m" and "-Xmx256m" in broker._jvm_options()
    assert broker.start_timeout_s == settings.embedded_broker.start_timeout_s


def test_managed_properties_cannot_be_overridden(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "state", server_properties={"listeners": "PLAINTEXT://0.0.0.0:9092"})
    with pytest.raises(BrokerError, match="listeners"):
        broker.start()
    assert broker.running() is None


def test_failed_format_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    broker = EmbeddedBroker(state, server_properties={"num.partitions": "not-a-number"})
    with pytest.raises(BrokerError, match=r"(?s)formatting the Kafka log dir.*num\.partitions"):
        broker.start()
    assert broker.running() is None and not (state / "broker.json").exists()
    assert not (state / "data" / "meta.properties").exists()


def test_broker_exiting_at_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "data").mkdir(parents=True)
    (state / "data" / "meta.properties").write_text("version=1\nnode.id=7\n")  # "formatted", but not for us
    broker = EmbeddedBroker(state)
    started = time.monotonic()
    with pytest.raises(BrokerError, match=r"(?s)process exited.*log tail"):
        broker.start(timeout_s=60)
    assert time.monotonic() - started < 45, "a dead broker is noticed at once, not at the timeout"
    assert broker.running() is None and not (state / "broker.json").exists()
    assert _our_kafka_processes(state) == []


def test_a_start_interrupted_while_waiting_leaves_no_broker(tmp_path: Path) -> None:
    """Ctrl-C while the JVM is still starting: the command that started it stops it (by its recorded PID).

    The start's wait is held for a minute first, so the signal lands in it however loaded the machine is (unheld,
    a loaded machine once let the broker turn healthy before the signal came, and the start returned)."""
    state = tmp_path / "state"
    code = (
        "import sys, time\n"
        "from pipelines.kafka import broker\n"
        "wait = broker.wait_until_healthy\n"
        "def wait_held(*args, **kwargs):\n"
        "    time.sleep(60)\n"
        "    return wait(*args, **kwargs)\n"
        "broker.wait_until_healthy = wait_held\n"
        "broker.EmbeddedBroker(sys.argv[1]).start()\n"
    )
    starter = subprocess.Popen([sys.executable, "-c", code, str(state)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (state / "broker.json").exists() and starter.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (state / "broker.json").exists(), "the broker's JVM was launched and recorded"
        pid = json.loads((state / "broker.json").read_text())["pid"]
        starter.send_signal(signal.SIGINT)
        _, stderr = starter.communicate(timeout=60)
        assert starter.returncode != 0 and b"KeyboardInterrupt" in stderr
        assert EmbeddedBroker(state).running() is None and not (state / "broker.json").exists()
        assert not pid_alive(pid), "the half-started broker JVM is stopped"
        assert _our_kafka_processes(state) == []
    finally:
        starter.kill()
        starter.wait()
        EmbeddedBroker(state).stop()  # only if a failed assertion left it recorded and running


def test_a_ctrl_c_right_after_the_jvm_is_recorded_leaves_no_broker(tmp_path: Path) -> None:
    """The worst moment, hit on purpose: SIGINT the instant the broker's PID is written, before the start is
    inside the ``try`` that stops the JVM on the way out (a real Ctrl-C landed there under load and left it)."""
    state = tmp_path / "state"
    code = (
        "import signal, sys\n"
        "from pipelines.kafka import broker\n"
        "write = broker._write_atomic\n"
        "def write_then_interrupt(path, text):\n"
        "    write(path, text)\n"
        "    if path.name == broker.STATE_FILE:\n"
        "        print(broker.json.loads(text)['pid'], flush=True)\n"
        "        signal.raise_signal(signal.SIGINT)\n"
        "broker._write_atomic = write_then_interrupt\n"
        "broker.EmbeddedBroker(sys.argv[1]).start()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True, text=True, timeout=120)
    try:
        assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr, done.stderr[-2000:]
        pid = int(done.stdout.split()[0])
        assert EmbeddedBroker(state).running() is None and not (state / "broker.json").exists()
        assert not pid_alive(pid), "the recorded broker JVM is stopped"
        assert _our_kafka_processes(state) == []
    finally:
        EmbeddedBroker(state).stop()  # only if a failed assertion left it recorded and running


def test_external_profile_starts_nothing(tmp_path: Path) -> None:
    settings = load_settings(
        "local",
        environ={
            "LAKEHOUSE__KAFKA__BOOTSTRAP_SERVERS": "kafka.example:9092",
            "LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(tmp_path / "state"),
        },
    )
    assert resolve_bootstrap_servers(settings) == "kafka.example:9092"
    assert not (tmp_path / "state").exists()


def test_embedded_not_running_without_start(tmp_path: Path) -> None:
    settings = load_settings("local", environ={"LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(tmp_path / "state")})
    with pytest.raises(BrokerError, match="broker start"):
        resolve_bootstrap_servers(settings, start=False)


def test_unhealthy_address_fails_clearly() -> None:
    with pytest.raises(BrokerError, match="not healthy"):
        wait_until_healthy(f"127.0.0.1:{free_port()}", timeout_s=1)


# --- an own broker: SIGKILL, restart on other ports, durability, clean stop -----------------------


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(tmp_path / "state")
    yield broker
    broker.stop()


@pytest.mark.slow
def test_data_and_offsets_survive_sigkill_and_restart_on_new_ports(own_broker: EmbeddedBroker) -> None:
    handle = own_broker.start()
    admin = AdminClient({"bootstrap.servers": handle.bootstrap_servers})
    topic = _topic(admin, partitions=3)
    counts = {0: 40, 1: 25, 2: 60}
    _produce(handle.bootstrap_servers, topic, counts)
    committed = [TopicPartition(topic, 0, 10), TopicPartition(topic, 1, 25), TopicPartition(topic, 2, 7)]
    group = {"group.id": "durable", "enable.auto.commit": False}
    consumer = Consumer({"bootstrap.servers": handle.bootstrap_servers, **group})
    _retry(lambda: consumer.commit(offsets=committed, asynchronous=False))
    consumer.close()

    os.kill(handle.pid, signal.SIGKILL)  # no clean shutdown
    deadline = time.monotonic() + 10
    while own_broker.running() is not None:  # reaps the killed child, drops the record
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert own_broker.stop() is False

    with ExitStack() as held:  # keep the old ports busy: the restart must work on other ports
        for port in (handle.port, handle.controller_port):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # still held by the killed broker's half-closed connections: busy anyway
            sock.listen()  # a listener blocks Kafka's own SO_REUSEADDR bind
        restarted = own_broker.start()
    assert restarted.pid != handle.pid
    assert {restarted.port, restarted.controller_port}.isdisjoint({handle.port, handle.controller_port})
    servers = restarted.bootstrap_servers

    admin = AdminClient({"bootstrap.servers": servers})
    assert _partition_count(admin, topic, 3) == 3
    consumer = Consumer({"bootstrap.servers": servers, **group})
    try:
        got = _retry(lambda: consumer.committed([TopicPartition(topic, p) for p in counts], timeout=10))
        assert [(tp.partition, tp.offset) for tp in got] == [(tp.partition, tp.offset) for tp in committed]
        consumer.assign([TopicPartition(topic, p, 0) for p in counts])
        values: dict[int, list[str]] = {p: [] for p in counts}
        deadline = time.monotonic() + 30
        while sum(map(len, values.values())) < sum(counts.values()) and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                assert message.error() is None, message.error()
                values[message.partition()].append(message.value().decode())
    finally:
        consumer.close()
    assert values == {p: [f"{p}:{n}" for n in range(count)] for p, count in counts.items()}

    # a clean stop: SIGTERM to exactly that PID, no JVM left for this state dir
    started = time.monotonic()
    assert own_broker.stop() is True
    assert time.monotonic() - started < 20, "clean shutdown, not the SIGKILL fallback"
    assert not Path(f"/proc/{restarted.pid}").exists()
    assert own_broker.running() is None and not own_broker.state_file.exists()
    assert _our_kafka_processes(own_broker.state_dir) == []
    assert not _listening_addresses(restarted.port)


@pytest.mark.slow
def test_concurrent_starts_yield_one_broker_and_an_unrecorded_jvm_blocks_a_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code = (
        "import sys; from pipelines.kafka.broker import EmbeddedBroker; print(EmbeddedBroker(sys.argv[1]).start().pid)"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    broker = EmbeddedBroker(state)
    try:
        pids = {int(starter.communicate(timeout=120)[0].strip()) for starter in starters}
        handle = broker.running()
        assert handle is not None and pids == {handle.pid}, "both starters got the same, single broker"
        assert _our_kafka_processes(state) == [handle.pid]
        # a lost record: the live JVM is found and a second one on the same log dir refused
        record = broker.state_file.read_text()
        broker.state_file.unlink()
        with pytest.raises(BrokerError, match=f"{handle.pid}.*does not record"):
            broker.start()
        broker.state_file.write_text(record)
    finally:
        for starter in starters:
            if starter.poll() is None:
                starter.kill()
        broker.stop()
    assert _our_kafka_processes(state) == []
