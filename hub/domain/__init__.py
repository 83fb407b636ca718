"""Business rules: tenants, keys, taxonomy, images, catalog, indexing, ranking, connections, deliveries, jobs,
imports. SQLAlchemy yes; the queue only through `pipeline.Pipeline`."""
