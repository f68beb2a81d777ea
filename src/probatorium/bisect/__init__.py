"""`probatorium bisect`: install released versions into throw-away venvs and binary-search for
the first release whose behaviour changed (docs/bisect.md)."""
