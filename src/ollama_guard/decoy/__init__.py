"""`ollama-guard decoy`: an Ollama-compatible server with a real on-disk model store and fake models.

Layout: `cli` (the click command, uvicorn + uvloop + httptools on a pre-bound socket) → `app` (pure ASGI:
request/server logs → CORS → Host guard → gin-like `router` → handler) → handlers (`handlers_general`,
`handlers_models`, `handlers_inference`, `handlers_openai`) over a shared `state` (settings, the
`ollama_guard.ollama.store.ModelStore`, the cached `catalog`, simulated loaded models). `bodies` decodes
request JSON the way Go does, `inference`/`textgen` produce deterministic output and metrics, `fabricate`
builds small fake models (real GGUF headers), `respond` holds the NDJSON/progress helpers.
"""
