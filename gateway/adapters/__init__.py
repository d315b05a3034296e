"""gRPC clients of the services and the NATS tick feed."""
