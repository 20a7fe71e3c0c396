"""What an upload is, read from its bytes: the format (``sniff.py``), the container and image headers
(``header.py``) and the limits the API enforces on them before the worker decodes a frame (``checks.py``)."""
