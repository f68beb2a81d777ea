"""Multi-host runs: the netns and ansible drivers, their manifests and cleanup (docs/cluster.md)."""
