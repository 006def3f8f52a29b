"""Remote cache: records signed by one machine (CI) in a shared bucket, read by the others.

Layout under FIGGEN["remote"] (any fsspec URL): `objects/<sha256><suffix>`, content-addressed as
in the local store, and `records/<name>/<lookup>.json`. A figure's full key depends on the files
its run imported, known only from a record, so a record is found by what is known before a
run (`lookup`: seed and parameters, Python, FIGGEN["versions"], threads, the script's and its
data's hashes), then judged like a local record: every input it names must hash the same here,
every distribution it names must be installed here at that version.

Each record holds an HMAC-SHA256, keyed by FIGGEN_REMOTE_KEY, of its canonical JSON: an unsigned
or wrongly signed record is ignored with a warning, so whoever can write to the bucket but has
no key cannot put an image on a page. An object must hash to its name. Intermediates (pickles,
which run code when loaded) are never sent. An unreachable remote costs one warning; the build
goes on locally.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from pelican_figgen.contract import write_atomic

from .cache import FORMAT, Asset, Cache, Expected, Image, Record, Store, record_from
from .settings import FiggenSettings

logger = logging.getLogger(__name__)
KEY = "FIGGEN_REMOTE_KEY"  # the HMAC key, as text
OPTIONS = "FIGGEN_REMOTE_OPTIONS"  # JSON: fsspec storage options, such as {"endpoint_url": ...}
# A remote that does not answer must cost seconds, not minutes: one attempt, short time-outs.
S3_OPTIONS = {"config_kwargs": {"connect_timeout": 3, "read_timeout": 10,
                                "retries": {"total_max_attempts": 1}}}
_OBJECT = re.compile(r"[0-9a-f]{64}\.[A-Za-z0-9]{1,10}")


def lookup(params: str, environment: Mapping[str, str], inputs: Mapping[str, str | None]) -> str:
    """The digest a remote record is filed under: what is known of a figure before it runs."""
    known = {"params": params, "environment": dict(environment), "inputs": dict(inputs)}
    return hashlib.sha256(json.dumps(known, sort_keys=True).encode()).hexdigest()


def sign(key: bytes, body: Mapping[str, Any]) -> str:
    """HMAC-SHA256 of a record's canonical JSON (sorted keys, no spaces), in hex."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def open_remote(settings: FiggenSettings) -> Remote | None:
    """The build's remote cache; None when none is set or it cannot be used (with a warning)."""
    if settings.remote is None:
        return None
    key = os.environ.get(KEY, "")
    if not key:
        logger.warning("figgen: FIGGEN['remote'] is %s but %s is not set: its records cannot "
                       "be checked, so it is not used", settings.remote, KEY)
        return None
    try:
        import fsspec  # here: only a build with a remote needs it

        options = json.loads(os.environ.get(OPTIONS) or "{}")
        if settings.remote.startswith(("s3://", "s3a://")):
            options = S3_OPTIONS | options
        fs, base = fsspec.core.url_to_fs(settings.remote, **options)
    except Exception as err:  # no driver (s3fs), bad options: local runs, never a failed build
        logger.warning("figgen: cannot open FIGGEN['remote'] %s (%s: %s; the remote needs "
                       "`pip install 'pelican-figgen[remote]'`); figures run locally",
                       settings.remote, type(err).__name__, err)
        return None
    return Remote(settings.remote, fs, base.rstrip("/"), key.encode(), settings.remote_write)


class Remote:
    """A remote cache for one build: stops talking to it after its first failure."""

    def __init__(self, url: str, fs: Any, base: str, key: bytes, write: bool) -> None:
        self.url, self.fs, self.base, self.key, self.write = url, fs, base, key, write
        self.down = False

    def fetch(self, cached: Cache, name: str, want: Expected) -> Record | None:
        """The figure's record from the remote, its objects now in the local store; or None."""
        digest = lookup(want.params, want.environment,
                        {rel: cached.hash(rel) for rel in want.inputs})
        raw = self._get(f"records/{name}/{digest}.json")
        record = raw and self._trusted(name, raw)
        if record is None:
            return None
        changed = cached.changed(record, want)
        if changed:
            logger.info("figgen: the remote's record of %s does not match here (%s)", name, changed)
            return None
        for stored in record.objects():
            if not self._download(cached, name, stored):
                return None
        cached.store.save(record)  # last: a local record never names a missing object
        logger.info("figgen: %s taken from the remote cache %s", name, self.url)
        return record

    def publish(self, store: Store, record: Record, want: Expected) -> None:
        """Send a record made here (when writing is on): its objects first, the record last."""
        if not self.write or self.down:
            return
        digest = lookup(record.params, {k: record.environment[k] for k in want.environment},
                        {rel: record.inputs.get(rel) for rel in want.inputs})
        body = asdict(record) | {"format": FORMAT}
        text = json.dumps({"record": body, "signature": sign(self.key, body)}, indent=1,
                          sort_keys=True)
        try:
            for stored in record.objects():
                self._put_object(stored, store)
            self._put(f"records/{record.name}/{digest}.json", text.encode())
        except Exception as err:  # the figure is made and kept locally all the same
            self._unreachable(err)
            return
        logger.info("figgen: %s written to the remote cache %s", record.name, self.url)

    def _trusted(self, name: str, raw: bytes) -> Record | None:
        """The record in a remote file when its signature is this key's; else None, warned."""
        where = f"{self.url} records/{name}"
        try:
            found = json.loads(raw)
            body, signature = found["record"], found.get("signature")
        except (ValueError, KeyError, TypeError) as err:
            logger.warning("figgen: ignoring an unreadable remote record of %s in %s (%s)",
                           name, where, err)
            return None
        if not isinstance(signature, str) or not signature:
            logger.warning("figgen: ignoring an unsigned remote record of %s in %s", name, where)
            return None
        if not hmac.compare_digest(sign(self.key, body), signature):
            logger.warning("figgen: ignoring a remote record of %s in %s: its signature is not "
                           "%s's (altered, or signed with another key)", name, where, KEY)
            return None
        try:
            fields = dict(body)
            if fields.pop("format") != FORMAT:
                return None  # written by another version of the plugin
            record = record_from(fields)
        except (KeyError, TypeError, AttributeError) as err:
            logger.warning("figgen: ignoring a malformed remote record of %s (%s)", name, err)
            return None
        names = [f"{o.sha256}{o.suffix}" for o in record.objects()]
        if record.name != name or not all(_OBJECT.fullmatch(n) for n in names):
            logger.warning("figgen: ignoring a remote record filed under %s that names %s or "
                           "objects %s", name, record.name, names)
            return None
        return record

    def _download(self, cached: Cache, name: str, stored: Image | Asset) -> bool:
        """Copy an object into the local store, if its bytes hash to its name; else False."""
        target = cached.store.object_path(stored)
        if cached.hashes(target) == stored.sha256:
            return True
        data = self._get(f"objects/{stored.sha256}{stored.suffix}")
        if data is None:
            return False
        if hashlib.sha256(data).hexdigest() != stored.sha256:
            logger.warning("figgen: refusing the remote's %s%s for %s: its bytes do not match "
                           "their sha256 name; it runs here", stored.sha256, stored.suffix, name)
            return False
        write_atomic(target, data)
        return True

    def _get(self, rel: str) -> bytes | None:
        """A remote file's bytes; None when it is absent or the remote cannot be reached."""
        if self.down:
            return None
        try:
            return self.fs.cat_file(f"{self.base}/{rel}")
        except FileNotFoundError:
            return None
        except Exception as err:  # refused, timed out, denied: local runs, never a failed build
            self._unreachable(err)
            return None

    def _put_object(self, stored: Image | Asset, store: Store) -> None:
        """Send an object unless the remote holds it (named by its hash: same bytes)."""
        rel = f"objects/{stored.sha256}{stored.suffix}"
        if not self.fs.exists(f"{self.base}/{rel}"):
            self._put(rel, store.object_path(stored).read_bytes())

    def _put(self, rel: str, data: bytes) -> None:
        """Write a remote file so that readers see all of it or nothing."""
        path = f"{self.base}/{rel}"
        if "local" not in self.fs.protocol:  # an object store's PUT is atomic
            self.fs.pipe_file(path, data)
            return
        tmp = f"{path}.{os.getpid()}.tmp"  # a shared folder: write aside, then rename
        self.fs.makedirs(self.fs._parent(path), exist_ok=True)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def _unreachable(self, err: Exception) -> None:
        """Warn once, then leave the remote alone for the rest of the build."""
        if not self.down:
            self.down = True
            logger.warning("figgen: the remote cache %s cannot be reached (%s: %s); figures "
                           "run locally", self.url, type(err).__name__, err)
