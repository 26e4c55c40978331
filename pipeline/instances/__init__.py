"""Instances: JupyterLab started from the digest an environment points to.

`model` holds what every backend shares (names, the environment's target, staleness);
`local` runs instances as containers on the Docker Engine; `gcp` builds the Vertex AI
Workbench requests for Google Cloud.
"""
