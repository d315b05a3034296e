"""svc_exec — the Order Executor Service.

It owns the FIX order-entry session to the exchange (SenderCompID BROKER, its persistent
message store and sequence numbers) and the durable ClOrdID ↔ order mapping (PostgreSQL
schema `exec`). It consumes order commands from JetStream, sends them over FIX, and
publishes every ExecutionReport and cancel reject back to JetStream, exactly once per
report, across crashes, reconnects and resends. It serves order-status queries and the
session's state over gRPC (`brokermesh.exec.v1.ExecutionService`).
"""
