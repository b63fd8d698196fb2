"""What a cluster is and what is known of it: the validated config, the topology it implies,
the state folder, and the Cluster that opens all three.
"""
