"""The gRPC surface of svc_exec."""
