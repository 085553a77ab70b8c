"""``cfcl run`` / ``cfcl demo``: every stage as one cached, resumable graph."""
