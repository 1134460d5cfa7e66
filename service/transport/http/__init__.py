"""The HTTP port: KServe V2 REST (`v2`), the friendly image route (`classify`), on aiohttp, in
the same event loop and over the same engine as gRPC (`server`)."""
