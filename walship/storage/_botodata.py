"""botocore's data files, loaded lean: what an S3 client uses, as plain dicts.

botocore parses its JSON models into ``OrderedDict`` and keeps them for the
client's life (the S3 model in the client's ``ServiceModel``, the endpoints
file in the session's resolver, which the S3 client's event handlers hold).
Measured after one S3 client (tracemalloc): 11.2 MiB of parsed JSON, 6.7 of
it ``endpoints.json`` (every AWS service in every partition) and 3.2 the S3
model, mostly its documentation. A shipper is resident for days, so here:

- plain dicts (ordered since Python 3.7; botocore only reads them as mappings);
- ``endpoints.json`` keeps, per partition, only the services a walship session
  creates clients for: S3, and what botocore's credential chain calls (STS for
  assumed roles, SSO, sign-in). A service missing there would still resolve,
  by its partition's defaults;
- a ``service-2`` model loses the documentation of the service, its operations,
  shapes and members (read only for docstrings and ``help()``); the
  ``clientContextParams`` docs stay, botocore indexes them.
"""

import gzip
import json
import os
from typing import Any

import botocore.loaders

__all__ = ["KEPT_SERVICES", "LeanJSONFileLoader", "lean_loader"]

KEPT_SERVICES = frozenset({"s3", "sts", "sso", "sso-oidc", "signin"})


class LeanJSONFileLoader(botocore.loaders.JSONFileLoader):
    """botocore's JSON file loader (same lookup: ``.json``, then ``.json.gz``), parsing lean."""

    def load_file(self, file_path: str) -> Any:
        for ext in (".json", ".json.gz"):
            full_path = file_path + ext
            if os.path.isfile(full_path):
                with open(full_path, "rb") as fp:
                    raw = fp.read()
                data = json.loads(gzip.decompress(raw) if ext == ".json.gz" else raw)
                return _lean(os.path.basename(file_path), data)
        return None


def lean_loader() -> botocore.loaders.Loader:
    """What ``botocore.loaders.create_loader()`` makes (botocore's own data), parsing lean."""
    return botocore.loaders.Loader(file_loader=LeanJSONFileLoader())


def _lean(name: str, data: Any) -> Any:
    if name == "endpoints" and isinstance(data, dict):
        for partition in data.get("partitions", ()):
            services = partition.get("services", {})
            partition["services"] = {k: v for k, v in services.items() if k in KEPT_SERVICES}
    elif name == "service-2" and isinstance(data, dict):
        data = _undocumented(data)
        data["operations"] = {k: _undocumented(v) for k, v in data.get("operations", {}).items()}
        data["shapes"] = {k: _lean_shape(v) for k, v in data.get("shapes", {}).items()}
    return data


def _lean_shape(shape: dict[str, Any]) -> dict[str, Any]:
    shape = _undocumented(shape)
    if "members" in shape:
        shape["members"] = {k: _undocumented(v) for k, v in shape["members"].items()}
    return shape


def _undocumented(part: dict[str, Any]) -> dict[str, Any]:
    # A new dict, not ``del``: a dict keeps its table size when a key goes.
    return {k: v for k, v in part.items() if k != "documentation"} if "documentation" in part else part
