"""The ``ipfvr`` command and the Python client of the job service."""
