"""What khwtui makes on this machine before any node sees it: certificates, kubeconfigs,
the encryption config, the SSH key, and every node file rendered from its template.
"""
