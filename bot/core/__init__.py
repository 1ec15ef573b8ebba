"""The core every layer stands on: settings, names, the state machines (the only writer of a
state), the database's records and sessions, the refusals services make, logging and metrics."""
