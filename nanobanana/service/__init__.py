"""The service around generation: who is asking, what it costs, where results live, what is kept."""
