"""The runtime shared by every brokermesh process.

It holds what is the same in every service and must not be written twice: configuration,
structured logs with request ids, the gRPC server and client plumbing (health, reflection,
errors with details), PostgreSQL engines and migrations, the NATS topology and its
publishers and durable consumers, the transactional outbox, exact decimals, ids, and the
launchers of the infrastructure the stack starts for itself. It holds no domain logic:
services never import each other, only this package and the generated stubs in gen/.
"""
