"""The request path, one module per stage, in the order `GatewayApp` runs them:

1. `client`       — peer / trusted X-Forwarded-For / allow_cidrs (and the ban hook)      → 403
2. `route`        — CORS, request-target form, method overrides, exact route allowlist   → 400 / 403
3. `authenticate` — the presented API key                                                → 401 / 503
4. `authorise`    — the key's role for the route, cloud routes                           → 403
5. `judge_body`   — encoding, size, time, Go-JSON ambiguity                              → 415/413/408/400
6. `policy`       — models, digests, registries (egress), `/api/create` sources, caps    → 400 / 403
7. `limits`       — rate, concurrency, token budget                                      → 429 / 503
8. `forward`      — relay to Ollama and back, listings filtered                          → 502/503/504
9. `account`      — tokens the answer used, charged to the key
10. `record`      — metrics and the audit record, for every request however it ended

Each refusal is a `Refusal` (`gateway/refusal.py`) answered by the app; nothing refused reaches Ollama.
"""
