"""DGS Lab pages. Page scripts are in ``pages/views``; shared widget groups in ``pages/ui.py``."""
