"""The build stage: build key and reuse, Dockerfile handling, SBOM; builders."""
