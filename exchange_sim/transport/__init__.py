"""The admin gRPC API (brokermesh.exchange.v1.ExchangeAdminService)."""
