"""Storage options (endpoints, credentials): parsed from the command line, and kept out of every message."""

import json
import re
from typing import Any
from urllib.parse import urlsplit


def parse_storage_options(text: str | None) -> dict:
    """A JSON object (e.g. the --storage-options flag) as a dict; None or blank gives {}. The error never
    repeats the text: it may hold credentials."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"storage options are not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f"storage options must be a JSON object, got a JSON {type(value).__name__}")
    return value


_SECRET_KEYS = re.compile(r"key|secret|token|password|passwd|credential|auth|session", re.I)


def redact(text: str, storage_options: dict) -> str:
    """`text` with secrets from `storage_options` replaced by ***: every string value under a secret-like key
    (nested dicts and lists too), and any other string value of 4 characters or more (shorter ones, like a
    "s3" or a "1", would garble a message and hide nothing). The one redaction function of the project."""
    for secret in sorted(set(_secret_values(storage_options)), key=len, reverse=True):  # longest first
        text = text.replace(secret, "***")
    return text


def _secret_values(value: Any, secret: bool = False) -> list[str]:
    if isinstance(value, str):
        return [value] if value and (secret or len(value) >= 4) else []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _secret_values(v, secret or bool(_SECRET_KEYS.search(str(k))))]
    if isinstance(value, (list, tuple, set)):
        return [s for v in value for s in _secret_values(v, secret)]
    return []


def safe_url(url: str) -> str:
    """A URL as shown in messages: without user:password@ or a ?query (a signed URL's token)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path}"


def strip_url_secrets(text: str, url: str) -> str:
    """`text` without the user:password and query of `url` (libraries quote URL parts in their errors)."""
    if "://" not in url:
        return text
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    for secret in sorted({userinfo, parts.password or "", parts.query}, key=len, reverse=True):
        text = text.replace(secret, "***") if secret else text
    return text
