"""nashalign."""
