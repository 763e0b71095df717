"""`make chaos`: the reliability suite.

The product promises that no activation notice is lost and no tenant gets a second connector
of our name, whatever fails around it: Exchange, the storage emulator, the worker process
itself. This package checks that promise against real parts: Azurite with its data on disk
(so it can be killed and come back with what it had written), the Exchange simulator, and
the local Functions runner as a separate process that the suite kills with SIGKILL.

    python -m chaos            # full size (make chaos), bounded by about 10 minutes
    python -m chaos --small    # the CI size, a couple of minutes

See docs/chaos.md for the scenarios and how to read the output.
"""
