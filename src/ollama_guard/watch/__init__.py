"""`ollama-guard watch`: the investigate rules, live, with alerts and bans.

Sources (``follow`` files like ``tail -F``, ``children`` journalctl/docker, ``auditdb`` the gateway's
audit table) hand lines to one ``pipeline`` (parser → the investigate engine → ``alerts``), which hands
alerts to the ``destinations`` (stdout, webhooks, syslog). ``runner`` wires them on one event loop.
"""
