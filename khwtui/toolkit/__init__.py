"""What a stage works with: the run context (cluster, SSH runner, provider, events) and the
helpers stages share — packages, release installs, manifests, workloads, add-ons.
"""
