"""The Kafka protocol gateway: a TCP server that serves Kafka clients from the
partition rings and segment files, as just another local client of the broker."""
