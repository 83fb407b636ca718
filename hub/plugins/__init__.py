"""The built-in connectors: each registers through the `hub` entry-point group exactly as a third-party plugin
would, and imports nothing of hub but the plugin SDK (`hub.connectors`, `hub.hookspecs`)."""
