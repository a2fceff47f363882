"""Untrusted text shown by the pages: Markdown never acts on it."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app_pages.ui import plain


@pytest.mark.parametrize(
    "text",
    [
        "![x](http://evil.example/i.png)",
        "[click](javascript:alert(1))",
        "<img src=x onerror=alert(1)>",
        "http://evil.example and www.evil.example",
        "**bold** _it_ `code` $x^2$ :smile: # head",
    ],
)
def test_plain_text_renders_as_typed(text: str) -> None:
    def page(text: str) -> None:
        import streamlit as st

        from app_pages.ui import plain

        st.markdown(plain(text))

    at = AppTest.from_function(page, args=(text,)).run()
    shown = at.markdown[0].value
    assert "![" not in shown.replace("\\!\\[", "") and "](" not in shown.replace("\\]\\(", "")
    unescaped = shown.replace("\\", "")
    assert unescaped == text  # every character kept, each special one escaped


def test_plain_escapes_each_markdown_character() -> None:
    assert plain("a_b*c[d](e)!") == "a\\_b\\*c\\[d\\]\\(e\\)\\!"
