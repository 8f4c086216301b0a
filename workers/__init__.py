"""msgroute's processes: the only package that wires RabbitMQ, HTTP, the store and carriers."""
