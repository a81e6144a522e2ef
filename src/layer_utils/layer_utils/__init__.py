"""Shared Lambda layer: AWS clients and errors, certificates, circuit breaker, jobs, messages."""
