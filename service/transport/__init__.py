"""The transport: what speaks gRPC. Servicers (`v2`, `digits`), the interceptor that turns
domain errors into status codes, bearer-token auth, TLS, and the stopping server's gate.

May import grpc, protobuf, `service._proto`, the domain and the store; nothing below it imports
this package. An HTTP transport will sit beside it, over the same engine.
"""
