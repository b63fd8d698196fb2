"""The interactive front end (Textual). Only this package imports textual or rich; the CLI
imports it lazily, and `khwtui.tui.app.make_app` builds the app."""
