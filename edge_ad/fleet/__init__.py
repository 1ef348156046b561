"""A plant of stations: bundles published once into a signed repository (TUF), a desired state per station group,
staged rollouts with canaries, every station's status on one central broker. Torch-free; tuf, boto3 and paho are
imported only where they are used (pip install 'edge_ad[fleet]')."""
