"""Go-like HTTP/1.x transport for the decoy (see server.py)."""
