"""Publishing the ledger as registry tags: publishers for OCI distribution and Artifact Registry."""
