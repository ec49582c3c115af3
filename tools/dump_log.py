"""Print segment files like Kafka's kafka-dump-log: `python tools/dump_log.py --files
00000000000000000000.log [--print-data-log]`. The same as `shmbroker dump-log`; the
code lives in shmbroker/log/dump.py."""

import sys

from shmbroker.log.dump import main

if __name__ == "__main__":
    sys.exit(main())
