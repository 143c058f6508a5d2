"""Storage options (endpoints, credentials): parsed from the command line, and kept out of every message."""

import json
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


def redact(text: str, storage_options: dict) -> str:
    """`text` with every string value of `storage_options` (nested dicts and lists too) replaced by ***."""
    secrets = sorted(set(_string_values(storage_options)), key=len, reverse=True)  # longest first
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _string_values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []  # replacing "" would put *** between every character
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple, set)) else ()
    return [s for v in items for s in _string_values(v)]


def safe_url(url: str) -> str:
    """The manifest URL as shown in messages: without user:password@ or a ?query (a signed URL's token)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path}"
