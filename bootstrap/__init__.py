"""The p2pfl bootstrap registry: helps peers of a network find each other, and holds no model data.

The registry service itself (``p2pfl-bootstrap``) is tracked as its own issue; this package exists so that
installs and imports are stable while it is built.
"""
