"""walship's Prefect flows, one module each: import the one you run (``flows.restore``).

Nothing is imported here, so a deployment or command that runs one flow
does not pay for importing the others.

No module here uses ``from __future__ import annotations``: ``flow.serve()``
cannot resolve pydantic parameter types declared that way.
"""
