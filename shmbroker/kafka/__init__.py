"""The Kafka wire protocol: the codec (kio behind one face, plus the hand-framed hot
paths) and the table between our exceptions and Kafka's error codes."""
