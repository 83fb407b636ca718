"""taskiq: the broker, the tasks (thin calls into `hub.domain`), the sweep and `hub worker`."""
