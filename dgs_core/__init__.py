"""DGS Lab compute core: optimizers, schedules, metrics, surfaces and training.

Never imports streamlit; usable from a notebook, a script or the CLI.
"""

__version__ = "0.1.0"
