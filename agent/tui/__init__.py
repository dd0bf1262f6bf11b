"""`agent tui`: a Textual app over the store. Screens read in worker threads, so the UI never waits on SQL."""
