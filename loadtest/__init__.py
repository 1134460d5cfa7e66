"""`python -m loadtest`: drive a digits server and report where the time goes.

Closed loop over a concurrency sweep and an open loop at a fixed Poisson request rate, through
both APIs (KServe V2 raw tensors, digits.v1 PNG images) and every model asked for. Each phase is
bounded in time; the server's own /metrics are scraped before and after it. The result is a table
on stdout, `reports/load-<timestamp>.json` and a PNG beside it.

Modules: `server` (start a local server, scrape /metrics), `workload` (MNIST requests),
`runner` (the loops), `report` (table, JSON), `plot` (the PNG, with Pillow), `perf`
(Triton's perf_analyzer with the same settings). The service never imports this package.
"""
