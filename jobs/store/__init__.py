"""Redis, the system of record: jobs (``jobs.py``, transitions in ``lua.py``), identities, worker
states and the journal of result uploads to clean up, all under the key layout of ``keys.py``."""
