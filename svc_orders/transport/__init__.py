"""The gRPC face of the OMS: thin servicers mapping protos to use cases and back."""
