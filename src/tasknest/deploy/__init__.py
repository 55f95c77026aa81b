"""Deployment: LocalCluster, the command line, TLS settings."""
