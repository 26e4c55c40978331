"""Local fakes of the Google Cloud APIs envctl calls, speaking their REST wire protocol.

`rest.FakeRestServer` is the base (routes, request log, errors, operations);
`artifactregistry.FakeArtifactRegistry` and `storage.FakeStorage` keep state
for the APIs they serve. Tests point the real client libraries at them through
`ENVCTL_GCP_ENDPOINTS` (see `pipeline/gcp.py`).
"""
