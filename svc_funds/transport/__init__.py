"""gRPC servicers: proto in, application call, proto out."""
