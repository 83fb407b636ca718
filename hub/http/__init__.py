"""Litestar only: the app factory, the one error-to-status table, authentication, and the routes. Handlers
turn requests into calls of `hub.domain` and its answers into typed responses."""
