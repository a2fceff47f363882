"""Configuration links (dgs_core.links): a round trip, and untrusted texts refused naming the field."""

from __future__ import annotations

import base64
import zlib

import pytest

from dgs_core import links
from dgs_core.params import ParamError


def test_a_packed_value_unpacks_to_itself() -> None:
    data = {"optimizers": [{"name": "sgd", "hparams": {"lr": 0.1}}], "steps": 300, "note": "ü"}
    text = links.pack(data)
    assert text.isascii() and "=" not in text and "/" not in text and "+" not in text
    assert links.unpack(text, "cfg") == data


def bomb() -> str:
    return base64.urlsafe_b64encode(zlib.compress(b"[" + b"0," * 100_000 + b"0]", 9)).decode()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "at most"),
        ("x" * (links.MAX_CHARS + 1), "at most"),
        (123, "at most"),
        ("not-a-link", "made by DGS Lab"),
        (base64.urlsafe_b64encode(zlib.compress(b"{")).decode(), "made by DGS Lab"),
        (base64.urlsafe_b64encode(zlib.compress(b"{}"))[:-4].decode(), "made by DGS Lab"),
    ],
)
def test_a_bad_text_names_the_links_field(text, why: str) -> None:
    with pytest.raises(ParamError, match=rf"^Invalid study: .*{why}"):
        links.unpack(text, "study")


def test_a_text_that_unpacks_past_the_limit_is_refused() -> None:
    text = bomb()
    assert len(text) <= links.MAX_CHARS
    with pytest.raises(ParamError, match="too large or truncated"):
        links.unpack(text, "cfg")
