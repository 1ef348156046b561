"""edge_ad: unsupervised visual inspection on the edge."""

__version__ = "0.1.0"
