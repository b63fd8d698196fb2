"""The ground every layer stands on: errors and exit codes, events, outcomes, crash-safe
file writes, crash points for tests, and the one way khwtui waits. Imports nothing of khwtui
above it.
"""
