"""Host audit: does this host (or a mounted root) expose Ollama, and how to fix it.

`collect` gathers facts from one module per source (systemd, launchd, env files, processes, Docker,
Compose, sockets, version, model store, gateway); `checks` turns facts into findings with fixes;
`harden` writes those fixes as files to review.
"""
