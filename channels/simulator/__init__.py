"""Local servers that speak the providers' protocols, for tests, the demo and benchmarks."""
