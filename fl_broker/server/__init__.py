"""The server program: engine state, client sessions, runs, command handlers, the task channel."""
