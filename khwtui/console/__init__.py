"""The engine without a UI (`--auto`, `--json`) and the plain-text tables headless commands print.
"""
