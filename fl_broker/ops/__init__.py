"""Operations: a private RabbitMQ node, provisioning, TLS, system information, allocator tuning."""
