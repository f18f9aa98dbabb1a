"""The ``tf-reweight`` command line."""
