"""The composer as a service: requests checked, continuous batching, pieces assembled, HTTP and in-process."""
