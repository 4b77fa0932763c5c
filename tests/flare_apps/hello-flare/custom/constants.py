class NPConstants:
    NUMPY_KEY = "numpy_key"
    FROZEN_KEY = "frozen_key"  # the aggregator's exclude_vars ("^frozen") leaves it out
    EVENTS_FILE = "flare_events.txt"  # what the persistor saw, one line each, in the run folder
