"""Background work and its error handling: jobs (thread-worker generators that yield plain
messages), the TaskBar that runs one job at a time and reports its errors, user messages, and
the training child process."""
