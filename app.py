"""DGS Lab entry point: page config, navigation, presenter mode (every page). Nothing else.

Run with ``streamlit run app.py``. Page scripts live in ``app_pages/``, deliberately not in a
folder named ``pages/``: with such a folder beside this file, Streamlit (1.67) runs the first
session of a fresh server in legacy multipage mode and answers a deep link with "Page not found".
"""

import streamlit as st

from app_pages.ui import presenter_mode

st.set_page_config(page_title="DGS Lab", page_icon="🧭", layout="wide")

PAGES = [
    st.Page("app_pages/home.py", title="Home", icon="🏠", url_path="index", default=True),
    st.Page("app_pages/lessons.py", title="Lessons", icon="🎓", url_path="lessons"),
    st.Page("app_pages/surface_lab.py", title="Surface lab", icon="⛰️", url_path="surface"),
    st.Page("app_pages/training_lab.py", title="Training lab", icon="🧠", url_path="training"),
    st.Page("app_pages/annealing_lab.py", title="Annealing lab", icon="📉", url_path="annealing"),
    st.Page("app_pages/landscape.py", title="Landscape lab", icon="🏔️", url_path="landscape"),
    st.Page("app_pages/claims.py", title="Claims", icon="⚖️", url_path="claims"),
    st.Page("app_pages/runs.py", title="Runs", icon="🗂️", url_path="runs"),
]

# The default page lives at "/" (its url_path is only reserved: Streamlit answers it with "Page not
# found"). An old or typed /home link lands on this hidden page, which moves on to Home at "/".
HOME_ALIAS = st.Page(lambda: st.switch_page(PAGES[0]), title="Home", url_path="home", visibility="hidden")

page = st.navigation([*PAGES, HOME_ALIAS])
presenter_mode()  # the ?present=1 flag and its toggle, on every page
page.run()
