"""IP-FVR as a library: video I/O, face pipeline, identity, restoration engines. Imports no service code."""

__version__ = "0.1.0"
