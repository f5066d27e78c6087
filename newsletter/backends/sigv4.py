"""AWS Signature Version 4 for one HTTP request, in the Authorization header.

The steps of AWS's "Create a signed AWS API request": canonical request -> string to sign ->
signing key (HMAC-SHA256 chained over date, region, service and ``aws4_request``) ->
signature -> ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
Signature=...``. Every header passed in is signed, plus ``host`` and ``x-amz-date``.

Scope: what a request with a known body needs. ``url`` must be the URL as sent (already
percent-encoded); its path is encoded once more, as AWS requires for every service but S3,
and is not normalized (no ``.``/``..`` handling). No presigned URLs, chunked payloads or
session tokens. Checked against AWS's published test vectors in the tests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _encode(value: str, safe: str = "") -> str:
    """RFC 3986 encoding: everything but unreserved characters (and ``safe``) as %XX."""
    return quote(value, safe="-_.~" + safe)


def host_header(url: str) -> str:
    """The Host header an HTTP client sends for ``url`` (the port only if not the default)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if parts.port is not None and parts.port == _DEFAULT_PORTS.get(parts.scheme):
        host = host.rpartition(":")[0]
    return host


def canonical_request(
    method: str, url: str, headers: Mapping[str, str], payload_hash: str
) -> tuple[str, str]:
    """(canonical request, signed header names joined by ``;``) for ``headers`` as given."""
    parts = urlsplit(url)
    pairs = []
    for item in parts.query.split("&"):
        if item:
            key, _, value = item.partition("=")
            pairs.append((_encode(unquote(key)), _encode(unquote(value))))
    query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    canonical = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    names = sorted(canonical)
    signed_headers = ";".join(names)
    lines = [
        method.upper(),
        _encode(parts.path or "/", safe="/"),
        query,
        "".join(f"{name}:{canonical[name]}\n" for name in names),
        signed_headers,
        payload_hash,
    ]
    return "\n".join(lines), signed_headers


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = ("AWS4" + secret_access_key).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, sha256_hex(canonical.encode("utf-8"))])


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    credentials: Credentials,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers to send: ``headers`` plus Host, X-Amz-Date and Authorization.

    The payload hash is computed from ``body``; to also send it as ``X-Amz-Content-Sha256``,
    pass that header in ``headers`` (it is then signed like any other).
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    reserved = {"host", "x-amz-date", "authorization"}
    to_sign = {k: v for k, v in headers.items() if k.lower() not in reserved}
    to_sign |= {"Host": host_header(url), "X-Amz-Date": amz_date}
    canonical, signed_headers = canonical_request(method, url, to_sign, sha256_hex(body))
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    key = signing_key(credentials.secret_access_key, amz_date[:8], region, service)
    signature = hmac.new(
        key, string_to_sign(amz_date, scope, canonical).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return {**to_sign, "Authorization": authorization}
