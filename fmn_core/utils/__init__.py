"""Small helpers shared by the data, engine and retrieval modules."""
