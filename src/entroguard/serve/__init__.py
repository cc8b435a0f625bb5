"""Split inference over HTTP: a cloud server holding the tail, an edge client holding the head.

Modules, one idea each (import them directly; this package imports nothing heavy):

* :mod:`~entroguard.serve.app`: the FastAPI app factory ``create_app``;
* :mod:`~entroguard.serve.engine`: packets -> guard -> decode (checked by the codec, see
  :mod:`entroguard.codec.rans`) -> tail -> predictions;
* :mod:`~entroguard.serve.guard`: clean payload statistics, the rate guard, per-client budgets;
* :mod:`~entroguard.serve.sequential`: the guard's per-client sequential test (CUSUM);
* :mod:`~entroguard.serve.body`: reading a request body without passing a byte limit;
* :mod:`~entroguard.serve.framing`: several packets in one request body;
* :mod:`~entroguard.serve.metrics`: Prometheus text exposition;
* :mod:`~entroguard.serve.errors`: the JSON error contract (status, machine-readable reason);
* :mod:`~entroguard.serve.resolve`: a model by zoo name or checkpoint path, with its statistics;
* :mod:`~entroguard.serve.runner`: uvicorn on a bound socket, in a thread or in the foreground;
* :mod:`~entroguard.serve.client`: the edge's HTTP client (retries, backoff, clear errors);
* :mod:`~entroguard.serve.edge`: the edge loop (encode, send, time, summarise);
* :mod:`~entroguard.serve.uploads`: raw, PNG and JPEG sizes of the same images;
* :mod:`~entroguard.serve.inputs`: images from files, folders or a test set;
* :mod:`~entroguard.serve.cli`: ``serve_command`` and ``edge_command`` for the ``entroguard`` CLI.
"""
