"""Capture real clients' request frames for the fuzz test: `python -m
tests.gateway.capture_frames` runs kcat, confluent-kafka, kafka-python and aiokafka
through a recording proxy in front of a gateway and writes what they sent to
captured_frames.bin (a few frames of each client, API and version, small ones).

Format: repeated [u8 name length][client name][u32 frame length][frame without its
size prefix]. Rerun after a client upgrade and commit the file.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import threading
import warnings
from collections import Counter
from pathlib import Path

from shmbroker import EmbeddedBroker

OUT = Path(__file__).with_name("captured_frames.bin")
PER_KIND = 5  # frames kept per (client, api key, version)
MAX_FRAME = 16 << 10


def read_frames(path: Path = OUT) -> list[tuple[str, bytes]]:
    data, at, out = path.read_bytes(), 0, []
    while at < len(data):
        n = data[at]
        name = data[at + 1 : at + 1 + n].decode()
        at += 1 + n
        (size,) = struct.unpack_from(">I", data, at)
        out.append((name, data[at + 4 : at + 4 + size]))
        at += 4 + size
    return out


class Recorder:
    """A TCP proxy to the gateway that keeps the client's frames."""

    def __init__(self) -> None:
        self.target: tuple[str, int] | None = None  # the gateway, once it listens
        self.client = "?"
        self.frames: list[tuple[str, bytes]] = []
        self.kinds: Counter[tuple[str, int, int]] = Counter()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            assert self.target is not None
            upstream = socket.create_connection(self.target)
            threading.Thread(
                target=self._pipe, args=(upstream, conn, False), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(conn, upstream, True), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        buf = b""
        try:
            while chunk := src.recv(1 << 16):
                dst.sendall(chunk)
                if not record:
                    continue
                buf += chunk
                while (
                    len(buf) >= 4 and len(buf) - 4 >= struct.unpack_from(">i", buf)[0]
                ):
                    size = struct.unpack_from(">i", buf)[0]
                    self._keep(buf[4 : 4 + size])
                    buf = buf[4 + size :]
        except OSError:
            pass
        finally:
            dst.close()

    def _keep(self, frame: bytes) -> None:
        key, version = struct.unpack_from(">hh", frame)
        kind = (self.client, key, version)
        if len(frame) <= MAX_FRAME and self.kinds[kind] < PER_KIND:
            self.kinds[kind] += 1
            self.frames.append((self.client, frame))


def main() -> None:
    rec = Recorder()
    boot = f"127.0.0.1:{rec.port}"  # Metadata sends clients back to the proxy too
    with EmbeddedBroker(
        gateway=True,
        topic_defaults={"ring.bytes": 4 << 20},
        gateway_options={"--advertised-listener": boot},
    ) as broker:
        rec.target = broker.gateway_address()
        rec.client = "kcat"
        for z in ("none", "gzip", "snappy", "lz4", "zstd"):
            subprocess.run(["kcat", "-b", boot, "-P", "-t", "c", "-z", z, "-K:"],
                           input=b"k:v1\nk:v2\n", check=True)  # fmt: skip
        subprocess.run(["kcat", "-b", boot, "-L"], check=True, capture_output=True)
        subprocess.run(["kcat", "-b", boot, "-C", "-t", "c", "-e", "-o", "beginning"],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run(["kcat", "-b", boot, "-Q", "-t", "c:0:0"], check=True,
                       capture_output=True)  # fmt: skip
        rec.client = "confluent-kafka"
        from confluent_kafka import Consumer, Producer, TopicPartition
        from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

        p = Producer({"bootstrap.servers": boot, "enable.idempotence": True})
        for i in range(3):
            p.produce("c", b"v%d" % i, key=b"k")
        p.flush(30)
        admin = AdminClient({"bootstrap.servers": boot})
        for f in admin.create_topics([NewTopic("c2", 2)]).values():
            f.result(30)
        for f in admin.describe_configs([ConfigResource("topic", "c2")]).values():
            f.result(30)
        for f in admin.delete_topics(["c2"]).values():
            f.result(30)
        c = Consumer({"bootstrap.servers": boot, "group.id": "x",
                      "enable.auto.commit": False})  # fmt: skip
        c.assign([TopicPartition("c", 0, 0)])
        c.consume(10, timeout=5)
        c.close()
        rec.client = "kafka-python"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
            from kafka import TopicPartition as KTP
            from kafka.admin import NewTopic as KNewTopic

            kp = KafkaProducer(bootstrap_servers=boot)
            kp.send("c", b"kp").get(30)
            kp.close()
            ka = KafkaAdminClient(bootstrap_servers=boot)
            ka.create_topics([KNewTopic("c3", 1, 1)])
            ka.delete_topics(["c3"])
            ka.close()
            kc = KafkaConsumer(bootstrap_servers=boot, consumer_timeout_ms=2000)
            kc.assign([KTP("c", 0)])
            kc.seek_to_beginning()
            list(kc)
            kc.close()
        rec.client = "aiokafka"
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.structs import TopicPartition as ATP

        async def aio() -> None:
            ap = AIOKafkaProducer(bootstrap_servers=boot)
            await ap.start()
            await ap.send_and_wait("c", b"aio", partition=0)
            await ap.stop()
            ac = AIOKafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False)
            await ac.start()
            ac.assign([ATP("c", 0)])
            await ac.seek_to_beginning(ATP("c", 0))
            await ac.getmany(timeout_ms=2000)
            await ac.stop()

        asyncio.run(aio())
    out = b"".join(
        bytes([len(name)]) + name.encode() + struct.pack(">I", len(frame)) + frame
        for name, frame in rec.frames
    )
    OUT.write_bytes(out)
    print(f"{len(rec.frames)} frames, {len(out)} bytes -> {OUT}")
    for kind, n in sorted(rec.kinds.items()):
        print(kind, n)


if __name__ == "__main__":
    main()
