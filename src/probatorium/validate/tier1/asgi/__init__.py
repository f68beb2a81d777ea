"""ASGI conformance probes (issue 12 items 10, 11): raw scope and orphaned streams, run by the adversarial slice."""
