"""DGS Lab entry point: page config, navigation, shared session setup. Nothing else.

Run with ``streamlit run app.py``. Page scripts live in ``pages/views/`` (not at the top of
``pages/``) so Streamlit's legacy page discovery never bypasses this file on a deep link.
"""

import streamlit as st

st.set_page_config(page_title="DGS Lab", page_icon="🧭", layout="wide")

PAGES = [
    st.Page("pages/views/home.py", title="Home", icon="🏠", url_path="home", default=True),
    st.Page("pages/views/surface_lab.py", title="Surface lab", icon="⛰️", url_path="surface"),
    st.Page("pages/views/training_lab.py", title="Training lab", icon="🧠", url_path="training"),
    st.Page("pages/views/annealing_lab.py", title="Annealing lab", icon="📉", url_path="annealing"),
    st.Page("pages/views/runs.py", title="Runs", icon="🗂️", url_path="runs"),
]

st.navigation(PAGES).run()
