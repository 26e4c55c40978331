"""The local stack: Docker Engine, OCI distribution registry and the base image."""
