"""A configuration as one URL-safe text, for a link (the Training lab's ``cfg=``, a study's
``study=``): its JSON, compressed with zlib and written in URL-safe base64.

A link is untrusted input: :func:`unpack` refuses an oversized text, a damaged one, and one that
would unpack past :data:`MAX_BYTES` (a zip bomb), each with a ``ParamError`` naming the link's
field; the schema that reads the JSON then validates every value.

>>> unpack(pack({"steps": 300}), "cfg")
{'steps': 300}
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from dgs_core.params import invalid

MAX_CHARS = 8192  # a link's text
MAX_BYTES = 65536  # and the JSON it unpacks to


def pack(data: Any) -> str:
    """``data`` (plain JSON values) as one URL-safe text."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(zlib.compress(text.encode(), 9)).decode().rstrip("=")


def unpack(text: Any, field: str) -> Any:
    """The JSON value of a :func:`pack` text; ``field`` names the link's parameter in errors."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_CHARS:
        raise invalid(field, str(text)[:40], f"a configuration link of at most {MAX_CHARS} characters")
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        unpacker = zlib.decompressobj()
        raw = unpacker.decompress(packed, MAX_BYTES)
        if unpacker.unconsumed_tail or not unpacker.eof:
            raise ValueError("too large or truncated")
        return json.loads(raw.decode())
    except (ValueError, zlib.error, UnicodeDecodeError) as exc:  # binascii.Error is a ValueError
        raise invalid(field, text[:40], f"a configuration link made by DGS Lab ({exc})") from None
