"""Sections of a page too long for its script: one module per page section, each ≤ ~300 lines.

Imported by the page scripts only; widgets from ``app_pages.ui``, long work through
``app_pages.live``, figures from ``dgs_core.viz``.
"""
