"""The durable log of a partition: Kafka-format segment files (.log, .index,
.timeindex) in one `<topic>-<partition>/` directory."""
