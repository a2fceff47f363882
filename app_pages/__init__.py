"""DGS Lab page scripts (registered in app.py with st.Page) and shared widget groups (ui.py).

Not named ``pages/``: see app.py.
"""
