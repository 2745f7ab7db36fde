"""Go-like HTTP/1.x transport for the decoy (see server.py).

``server`` runs connections; ``request`` reads a request head into a ``GoRequest`` (its parts:
``rejects`` — Go's refusals, ``input`` — the buffer and read limit, ``requestline``, ``headers``) and
``body`` its body; ``response`` writes the answer as Go's ``http.response`` does.
"""
