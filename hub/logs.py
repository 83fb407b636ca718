"""Structured logs: one JSON object per line, with API keys and tokens masked wherever they appear."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# what gets masked wherever it appears (logs, stored error messages, error answers): the hub's own keys, bearer
# tokens, platform credentials (WooCommerce ck_/cs_ keys, Shopify shpat_/shpss_/shpca_/shppa_ tokens), credential
# query parameters, and user:password@ in URLs
SECRET_PATTERN = re.compile(
    r"(?P<prefix>hub_(?:sk|pk)_|\b(?:ck|cs)_|\bshp(?:at|ss|ca|pa)_)[A-Za-z0-9_\-]{6,}"
    r"|(?P<bearer>(?:Bearer|Basic)\s+)[^\s\"',]+"
    r"|(?P<param>\b(?:consumer_key|consumer_secret|oauth_signature|oauth_consumer_key|oauth_token|access_token|"
    r"client_secret|api_?key|token|password|secret|signature|x-amz-signature|sig)=)[^&\s\"'#]+"
    r"|(?P<scheme>\b[a-z][a-z0-9+.\-]*://)[^/\s:@\"']+:[^/\s@\"']+@",
    re.IGNORECASE,
)
STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _mask(match: re.Match[str]) -> str:
    if match.group("scheme"):
        return match.group("scheme") + "***@"
    return (match.group("prefix") or match.group("bearer") or match.group("param")) + "***"


def redact(text: str) -> str:
    """``text`` with every secret it contains masked (see ``SECRET_PATTERN``)."""
    return SECRET_PATTERN.sub(_mask, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in record.__dict__.items() if k not in STANDARD_ATTRS}
        line = super().format(record) + (" " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")
        return redact(line)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "taskiq"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel("WARNING")  # hub.access logs requests without query strings
    for noisy in ("httpx", "httpcore", "chromadb", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
