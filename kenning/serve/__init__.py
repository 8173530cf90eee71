"""`kenning serve`: an HTTP service and a browser page over one index."""
