"""telbus core: configuration, codec, Kafka clients and the CLI."""
