"""The Litestar app: shops, keys, taxonomy, images, recommendations."""
