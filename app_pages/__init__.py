"""DGS Lab page scripts (registered in app.py with st.Page), the widget groups they share (ui.py),
the pattern for long work (live.py) and the sections of the longer pages (parts/).

Not named ``pages/``: see app.py.
"""
