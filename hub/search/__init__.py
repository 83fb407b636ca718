"""Vectors: the FashionCLIP encoder, request batching and the vector store. No SQL, no domain rules."""
