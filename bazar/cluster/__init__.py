"""The whole cluster in one command: every role as a supervised child process."""
