"""How khwtui reaches things: SSH to nodes, the Kubernetes API, release downloads and their
progress.
"""
