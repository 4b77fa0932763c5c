"""The federated-learning API that apps are written against: executors, persistors, workflows, aggregation."""
