"""Configs: the default config declaring every key (`default`) and command-line parsing (`cli`)."""
