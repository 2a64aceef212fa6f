"""Processing provider 'hiriseice': thin algorithms and the client that runs the worker."""
