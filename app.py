"""DGS Lab entry point: page config, navigation, shared session setup. Nothing else.

Run with ``streamlit run app.py``. Page scripts live in ``pages/views/`` (not at the top of
``pages/``) so Streamlit's legacy page discovery never bypasses this file on a deep link.
"""

import streamlit as st

st.set_page_config(page_title="DGS Lab", page_icon="🧭", layout="wide")

PAGES = [
    st.Page("pages/views/home.py", title="Home", icon="🏠", url_path="home", default=True),
]

st.navigation(PAGES).run()
