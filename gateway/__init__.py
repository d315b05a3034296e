"""The REST + Server-Sent-Events edge for mobile and web clients.

It owns nothing durable: it authenticates users (JWT), validates requests against
`openapi.yaml`, maps them to the services' gRPC contracts with the user id taken from the
verified token, turns gRPC errors into RFC 9457 problem+json, and fans live prices out to
SSE clients from one shared NATS subscription per process.
"""
