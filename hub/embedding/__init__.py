"""The embedding side: FashionCLIP encoder, image fetching, the vector store and the taskiq workers."""
