"""gRPC servicers and the protobuf mapping (wire.py)."""
