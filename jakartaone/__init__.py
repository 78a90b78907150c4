"""The composition root: settings, migrations and the `jakartaone` command line."""
