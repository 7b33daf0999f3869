"""`python -m nanobanana`: the command line."""
