"""Print a ring's cursors, offsets and counters: `python tools/ring_stat.py /shmb.NAME`.
The same as `shmbroker ring-stat`."""

from shmbroker.cli import main

if __name__ == "__main__":
    main(["ring-stat", *__import__("sys").argv[1:]])
