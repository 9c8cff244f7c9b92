"""The config hash: ``HASH_VERSION``, the view of a normalized service it covers (release 0's: ``_legacy``),
the per-field hashes and their label. Used by ``service``, ``model`` and ``request``; ``host_paths`` tells
the adapters which host paths to resolve for ``_legacy`` (spec itself never looks at the filesystem)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from reconciler import labels as L
from reconciler.render import unescape_dollars

# Version of the config-hash algorithm, stamped as io.reconciler.hash-version. Bump it whenever `hashed`
# changes, and keep the old algorithm next to `_legacy` so existing containers are still recognized;
# tests/converge/test_hash_golden.py pins the values.
HASH_VERSION = 1
# Compact JSON {compose key: short hash} of the normalized spec, on every container we create. It lets
# `plan` name the fields that changed from the container list alone (no inspect, no values: nothing
# secret ends up in a label). TODO(lead): move next to the other keys in reconciler/labels.py.
FIELDS_LABEL = L.CONFIG_FIELDS


def hashed(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a normalized service the config hash covers (version 1). ``depends_on`` only orders
    the start, as in Compose; bind sources count by their path as written and their content digest."""
    return {k: v for k, v in config.items() if k != "depends_on"}


def _legacy(config: Mapping[str, Any], real_paths: Mapping[str, str]) -> dict[str, Any]:
    """The hashed view of release 0: depends_on in, bind/secret/config sources with symlinks resolved,
    no content digests, no network priority.

    Release 0 called realpath here; now the adapter resolves the paths when it deploys (``real_paths``:
    source as written -> resolved path, see ``host_paths``) and a path it did not resolve counts as written,
    which is what realpath gave for a path without symlinks."""
    out = dict(config)
    for key in ("volumes", "secrets", "configs"):
        if key in out:
            mounts = []
            for m in out[key]:
                m = {k: v for k, v in m.items() if k != "digest"}
                if (key != "volumes" or m.get("type") == "bind") and "source" in m:
                    m["source"] = real_paths.get(m["source"], m["source"])
                mounts.append(m)
            out[key] = mounts
    if "networks" in out:
        out["networks"] = {
            n: {k: v for k, v in ep.items() if k != "priority"} for n, ep in out["networks"].items()
        }
    return out


def host_paths(model: Mapping[str, Any]) -> frozenset[str]:
    """The host paths a rendered model mounts, spelled as the normalized spec spells them: bind sources and
    the files of file-based secrets and configs. The adapters resolve their symlinks for ``_legacy``."""
    model = unescape_dollars(model)
    paths = {
        str(vol["source"])
        for svc in (model.get("services") or {}).values()
        for vol in (svc or {}).get("volumes") or ()
        if isinstance(vol, Mapping) and vol.get("type") == "bind" and vol.get("source")
    }
    for kind in ("secrets", "configs"):
        for item in (model.get(kind) or {}).values():
            if isinstance(item, Mapping) and item.get("file"):
                paths.add(str(item["file"]))
    return frozenset(paths)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def field_hashes(config: Mapping[str, Any]) -> dict[str, str]:
    """A short hash per compose key: enough to name what changed, too short to reveal a value."""
    return {k: hashlib.sha256(canonical_json(v).encode()).hexdigest()[:8] for k, v in config.items()}
