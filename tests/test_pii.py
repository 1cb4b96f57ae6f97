"""PII in Spark built-ins equals the plain-Python reference: HMAC pseudonyms and IP truncation.

The Spark versions (``SparkPseudonymizer``, ``truncate_ip_column``) re-implement HMAC-SHA256 and CPython's
``ipaddress`` parsing and canonical text in SQL expressions; these tests run both on a generated corpus of
ordinary and awkward inputs and require identical output, row by row.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random

import pytest

from pipelines.silver.pii import PiiRules, SparkPseudonymizer, truncate_ip, truncate_ip_column

pytestmark = pytest.mark.integration


def ip_corpus(seed: int = 7, count: int = 400) -> list[str | None]:
    """Valid addresses in every spelling ``ipaddress`` accepts, plus near misses it rejects."""
    rng = random.Random(seed)
    values: list[str | None] = [
        None,
        "",
        " ",
        "0.0.0.0",
        "255.255.255.255",
        "203.0.113.77",
        " 198.51.100.200\t",
        "\u00a010.1.2.3\u3000",
        "01.2.3.4",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.2.3.4/24",
        "::",
        "::1",
        "1::",
        "fe80::1%eth0",
        "fe80::1%",
        "fe80::1%a%b",
        "::ffff:192.0.2.1",
        "::ffff:192.0.2.256",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        ":1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:",
        "12345::1",
        "g::1",
        "2a02:AB:cd:EF::1",
        "1:0:0:1:0:0:0:1",
        "0:0:1:0:0:1:0:0",
        "1:2:3:4:5:6:1.2.3.4",
        "1::1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "not an ip",
        "1.2.3.4 5",
        "::ffff:1.2.3",
        "fe80::%eth0",
    ]
    for _ in range(count):
        if rng.random() < 0.4:
            address = ipaddress.IPv4Address(rng.getrandbits(32))
            values.append(str(address))
            continue
        hextets = [rng.choice([0, 0, 0, rng.getrandbits(16), rng.getrandbits(4)]) for _ in range(8)]
        address6 = ipaddress.IPv6Address(int.from_bytes(b"".join(h.to_bytes(2, "big") for h in hextets), "big"))
        spelling = rng.choice(["compressed", "exploded", "upper", "scope", "tail"])
        if spelling == "compressed":
            values.append(address6.compressed)
        elif spelling == "exploded":
            values.append(address6.exploded)
        elif spelling == "upper":
            values.append(address6.compressed.upper())
        elif spelling == "scope":
            values.append(f"{address6.compressed}%{rng.choice(['eth0', '1', 'en 0'])}")
        else:
            head = address6.exploded.rsplit(":", 2)[0]
            values.append(f"{head}:{ipaddress.IPv4Address(rng.getrandbits(32))}")
    return values


@pytest.mark.parametrize("ipv4_prefix, ipv6_prefix", [(24, 48), (16, 64), (0, 0), (32, 128), (7, 37)])
def test_spark_ip_truncation_equals_ipaddress(spark, ipv4_prefix: int, ipv6_prefix: int) -> None:
    from pyspark.sql import functions as F

    rules = PiiRules("test", ipv4_prefix, ipv6_prefix, {}, {})
    corpus = ip_corpus()
    frame = spark.createDataFrame([(i, value) for i, value in enumerate(corpus)], "i int, ip string")
    got = {row.i: row.out for row in frame.select("i", truncate_ip_column(rules, F.col("ip")).alias("out")).collect()}
    expected = {i: truncate_ip(value, ipv4_prefix, ipv6_prefix) for i, value in enumerate(corpus)}
    mismatches = [(corpus[i], got[i], expected[i]) for i in expected if got[i] != expected[i]]
    assert not mismatches, mismatches[:10]
    assert sum(value is not None for value in expected.values()) > len(corpus) // 2  # the corpus is mostly valid


@pytest.mark.parametrize("key", [b"k", b"x" * 64, b"long key " * 20, "schl\u00fcssel".encode()])
def test_spark_pseudonyms_equal_python_hmac(spark, key: bytes) -> None:
    from pyspark.sql import functions as F

    rows = [("acme", "user-1"), ("acme", "\u00e9l\u00e8ve \u2603"), ("globex", ""), ("globex", None), ("t", "a" * 300)]
    pseudonymizer = SparkPseudonymizer(spark, key)
    frame = pseudonymizer.attach(spark.createDataFrame(rows, "tenant string, value string"))
    out = pseudonymizer.detach(frame.withColumn("p", SparkPseudonymizer.column(F.col("tenant"), F.col("value"))))
    assert out.columns == ["tenant", "value", "p"]
    for row in out.collect():
        expected = (
            None
            if row.value is None
            else hmac.new(key, f"{row.tenant}:{row.value}".encode(), hashlib.sha256).hexdigest()
        )
        assert row.p == expected, row


def test_the_key_never_appears_in_a_query_plan(spark, capsys: pytest.CaptureFixture[str]) -> None:
    from pyspark.sql import functions as F

    key = b"plan-secret-key-1234"
    pseudonymizer = SparkPseudonymizer(spark, key)
    frame = pseudonymizer.attach(spark.createDataFrame([("acme", "u1")], "tenant string, value string"))
    frame.withColumn("p", SparkPseudonymizer.column(F.col("tenant"), F.col("value"))).explain(extended=True)
    plan = capsys.readouterr().out
    assert "Project" in plan  # the plan was printed
    pads = [bytes(b ^ pad for b in key.ljust(64, b"\0")) for pad in (0x36, 0x5C)]
    for secret in [key.decode(), key.hex(), *(p.hex() for p in pads), *(p.hex().upper() for p in pads)]:
        assert secret not in plan
