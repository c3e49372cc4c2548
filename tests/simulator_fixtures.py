"""Simulator fixtures (owned by the simulator work): start ``python -m simulator`` on free ports."""
