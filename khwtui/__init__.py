"""khwtui: Kubernetes the Hard Way, built step by step and shown live.

Importing the package imports nothing else, so the headless engine never pulls in the TUI.
"""

__version__ = "0.1.0"
