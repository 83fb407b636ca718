"""One module per resource: its controller and its typed request and response schemas."""
