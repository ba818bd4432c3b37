"""The front end: Bazar's public API, a read-through LRU cache, and round robin over replicas."""
