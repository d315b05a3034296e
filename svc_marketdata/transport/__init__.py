"""gRPC servicers and the protobuf codec."""
