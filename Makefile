# Everything a fresh machine needs: `make run` and `make test` create the venv, install
# shmbroker (compiling the C core) with what its tests need, and go.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
CFLAGS_BENCH := -std=c11 -O2 -Wall -Wextra -Icsrc
CSRC := csrc/shmb_ring.c csrc/shmb_batch.c csrc/shmb_crc32c.c csrc/shmb_murmur2.c

.PHONY: dev build run test test-system soak test-sanitize lint typecheck check bench bench-smoke clean kcat kafkajs fuzz redis

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h) csrc/build_ffi.py | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

dev build: $(STAMP)

# the benchmarks' baselines (pyzmq) on top of the dev install
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

run: $(STAMP)
	@echo "shmbroker: serving ./shmbroker-data until Ctrl-C, and Kafka clients on 127.0.0.1:9092."
	@echo "In another terminal:"
	@echo "  seq 1 5 | $(BIN)/shmbroker produce --topic demo"
	@echo "  kcat -b 127.0.0.1:9092 -C -t demo -o beginning -e      # any Kafka client"
	@echo "  seq 6 9 | kcat -b 127.0.0.1:9092 -P -t demo -z zstd"
	@echo "  $(BIN)/shmbroker consume --topic demo --from-beginning --max-messages 5"
	@echo "  $(BIN)/shmbroker topics describe --topic demo"
	@echo "  $(BIN)/python -c 'from shmbroker import Producer; Producer().send(\"demo\", b\"hi\").get()'"
	$(BIN)/shmbroker serve

# the gateway's tests run kcat (librdkafka's command-line client)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
kcat:
	@command -v kcat >/dev/null 2>&1 || { echo "installing kcat with apt"; \
		$(SUDO) apt-get install -y -q kcat >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q kcat; }; }

# kafkajs (Node.js) is one of the gateway's test clients: node from apt if missing,
# kafkajs from npm into the venv
KAFKAJS := $(VENV)/node/node_modules/kafkajs
kafkajs: $(KAFKAJS)
$(KAFKAJS): | $(BIN)/python
	@command -v npm >/dev/null 2>&1 || { echo "installing node and npm with apt"; \
		$(SUDO) apt-get install -y -q nodejs npm >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q nodejs npm; }; }
	npm install -q --no-audit --no-fund --prefix $(VENV)/node kafkajs@2.2.4

# bench_gateway's baseline: Redis Streams (the server from apt, redis-py from PyPI)
redis: $(STAMP)
	@command -v redis-server >/dev/null 2>&1 || { echo "installing redis-server with apt"; \
		$(SUDO) apt-get install -y -q redis-server >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }; }
	@$(BIN)/python -c "import redis" 2>/dev/null || $(BIN)/pip install -q "redis>=5"

test: $(STAMP) kcat kafkajs
	$(BIN)/pytest -q tests

# the gateway's bad-input fuzz at length (make test runs 150 examples a test)
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	GATEWAY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/gateway/test_fuzz.py

test-system: $(STAMP) kcat kafkajs
	$(BIN)/pytest -q -m system tests

# The lapped-consumer system test for SOAK_SECONDS of producing (make test runs 3 s),
# and SOAK_KILLS producers killed mid-append (make test kills 60).
SOAK_SECONDS ?= 30
SOAK_KILLS ?= 400
soak: $(STAMP)
	SHMB_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest -q -m system tests/system/test_lapped_consumers.py
	SHMB_KILLS=$(SOAK_KILLS) $(BIN)/pytest -q -m system tests/system/test_ring_processes.py -k killed_at_random

# The whole suite against an ASan + UBSan build of the C core, then back to -O2.
SANITIZERS := $(shell $(CC) -print-file-name=libasan.so):$(shell $(CC) -print-file-name=libubsan.so)
test-sanitize: $(STAMP)
	SHMB_SANITIZE=1 CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
		LDFLAGS=-fsanitize=address,undefined $(BIN)/pip install -q -e .
	LD_PRELOAD=$(SANITIZERS) ASAN_OPTIONS=detect_leaks=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(BIN)/pytest -q -p no:cacheprovider tests; \
		status=$$?; $(BIN)/pip install -q -e .; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check shmbroker tests benchmarks tools csrc/build_ffi.py
	$(BIN)/ruff format --check shmbroker tests benchmarks tools csrc/build_ffi.py
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint test

benchmarks/bench_ring_c: benchmarks/bench_ring_c.c $(CSRC) $(wildcard csrc/*.h)
	$(CC) $(CFLAGS_BENCH) -o $@ $< $(CSRC) -lpthread

bench: $(BENCH_STAMP) benchmarks/bench_ring_c redis
	$(BIN)/python benchmarks/bench_ring.py
	benchmarks/bench_ring_c
	$(BIN)/python benchmarks/bench_log.py
	$(BIN)/python benchmarks/bench_broker.py
	$(BIN)/python benchmarks/bench_groups.py
	$(BIN)/python benchmarks/bench_check_crcs.py
	$(BIN)/python benchmarks/bench_consumer_wait.py
	$(BIN)/python benchmarks/bench_calls.py
	$(BIN)/python benchmarks/bench_peers.py
	$(BIN)/python benchmarks/bench_gateway.py --tuned

bench-smoke: $(BENCH_STAMP) benchmarks/bench_ring_c
	$(BIN)/python benchmarks/bench_ring.py --smoke
	benchmarks/bench_ring_c --smoke
	$(BIN)/python benchmarks/bench_log.py --smoke
	$(BIN)/python benchmarks/bench_broker.py --smoke
	$(BIN)/python benchmarks/bench_groups.py --smoke
	$(BIN)/python benchmarks/bench_check_crcs.py --smoke
	$(BIN)/python benchmarks/bench_consumer_wait.py --smoke
	$(BIN)/python benchmarks/bench_segment_reads.py --smoke
	$(BIN)/python benchmarks/bench_calls.py --smoke
	$(BIN)/python benchmarks/bench_peers.py --smoke
	$(BIN)/python benchmarks/bench_gateway.py --smoke
	$(BIN)/python benchmarks/bench_group_failover.py --smoke

clean:
	rm -rf build *.egg-info shmbroker/_shmb*.so shmbroker/_shmb.c benchmarks/bench_ring_c
